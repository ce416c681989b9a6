-- wrk script: POST pre-signed, unique DM deliveries from BENCH_BODIES (one
-- "signature<TAB>body" per line). Thread k of n sends lines k, k+n, k+2n, ...
-- so no id is sent twice; `wrapped` counts requests beyond the file (re-sent ids).
local threads = {}
local path = os.getenv("BENCH_PATH") or "/webhook/twitter"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  nthreads = #threads > 0 and #threads or 1
  tid = tid or 0
  lines = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      table.insert(lines, {line:sub(1, tab - 1), line:sub(tab + 1)})
    end
    i = i + 1
  end
  n = 0
  wrapped = 0
end

function request()
  n = n + 1
  if n > #lines then wrapped = wrapped + 1 end
  local item = lines[((n - 1) % #lines) + 1]
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["x-twitter-webhooks-signature"] = item[1],
  }, item[2])
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"wrapped":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout, w,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
