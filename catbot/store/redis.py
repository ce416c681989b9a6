"""The shared store: Redis, for several daemon replicas (`CATBOT_STORE_URL=redis://...`).

Same contract as SQLite (one contract suite runs against both), but no process owns the data:
any number of replicas enqueue, claim and ack concurrently, and a replica that dies
(`kill -9`, a node lost) leaves its claimed jobs to the others once their lease ran out.

Data model (every key starts with the prefix, `catbot:` unless the URL says `?prefix=...`):

    seen:<event id>   string, SET NX PX <dedupe window>: the dedupe memory, expires by itself
    queued            hash   event id -> job id, for every job still queued (dedupe while the
                             job outlives the window: a redelivery must never queue it twice)
    next_id           counter for job ids
    job:<id>          hash   eid, uid, payload (the event as JSON), enq, avail, att (attempts),
                             tok (claim token, "" when not claimed), lease, turn, err
    queue             zset   job id -> job id: all queued jobs, oldest first (depth, pending)
    uq:<user id>      list   the user's job ids in arrival order; the head is the next to answer
    turns             stream with consumer group `workers`: one entry ("turn") per user
                             that has queued jobs, saying "this user's head job needs work"
    user:<user id>    hash   opted_out, last_fact_at, day, replies_today, seen_facts (JSON)
    dead              hash   event id -> dead letter (JSON); dead_order zset by dead_seq
    budget            zset   the global DM sends of every replica (sliding windows);
                             budget:<family> the same for another family (budget:post)
    heartbeat:<name>  string written by each replica's readiness check (a real write)
    xchat_keys        hash   conversation id -> sealed X Chat key blob (base64 of the opaque
                             bytes the keyring sealed; secrets, read only to load them)

Why turns and not one stream entry per job: the contract serialises each user (at most one
job in flight per user, the user's jobs in order). A stream of jobs read with XREADGROUP would
hand a user's second message to another replica while the first is still being answered.
So the stream carries at most ONE entry per user with queued work. Its life:

- enqueue appends the job to `uq:<user>`; when the list was empty, it XADDs a turn.
- claim takes the oldest due turn: first XAUTOCLAIM (a turn whose lease ran out - its replica
  died or stalled - or whose retry delay is over), else XREADGROUP `>` (a new turn). The
  turn's user's head job gets a fresh token and lease. The turn now sits in the group's
  pending entries list (PEL) under this replica's consumer name.
- extend re-stamps the turn's deadline (XCLAIM ... TIME); release clears the token and stamps
  the deadline `not_before`: the turn stays pending and XAUTOCLAIM hands it out when due.
- complete / dead_letter XACK + XDEL the turn, drop the job, and XADD a new turn when the user
  has more jobs (at the end of the stream: the user queues up behind the others again).

Lease deadlines live in the PEL itself. XAUTOCLAIM takes entries idle for at least
`min-idle-time`, idle being the server clock minus the entry's delivery time. Every turn's
delivery time is set to `deadline - SHIFT` (XCLAIM TIME, SHIFT ~ 31.7 years, so the time is
always in the past, as Redis requires), and claim asks for `min-idle-time = server_now - now
+ SHIFT`; the server clock cancels out, and XAUTOCLAIM takes exactly the turns with
`deadline <= now`, where `now` is the caller's clock like in every other store method. The
contract tests run on a fake clock, and production replicas share NTP time; the deadline of a
turn is also visible to operators (`XPENDING catbot:turns workers` shows who holds what).

Atomicity: every operation that reads and then writes is one Lua script (Redis runs a script
alone, and replicates and appends it to the AOF as one MULTI/EXEC), because each needs a
decision in the middle that MULTI cannot express: enqueue = dedupe check + job + turn, claim =
pick the turn + its user's head job + token + lease, complete/release/extend/dead_letter =
compare the claim token, then ack/re-stamp/record and save the user's state. A stale token
(the lease was lost and another replica took the job) changes nothing and returns False.
Scripts declare `#!lua` (no `no-writes` flag), so Redis refuses them up front, before any
write, when it is out of memory or a read-only replica: a script never stops half-way for
those reasons. The budget is a script too (count the windows, then take a slot).

Group commit: concurrent `enqueue` calls of one process share one enqueue script run (one
round trip, one AOF write and fsync), like SQLite's transactions; calls arriving while a run
is in flight form the next one. Each call still returns only once its events are stored, and
the run dedupes in order, so a call sees the same flags as if it ran alone after the calls
queued before it.

`release_all_claims` returns 0: no replica may hand back the others' claims; a restarted
replica's old claims come back through XAUTOCLAIM when their lease runs out
(`single_owner = False` tells the daemon not to call it at all).

Every call has a socket and a connect timeout, dead connections are found by a health check,
and connection errors are retried briefly by redis-py before they surface as `StoreError`
(the webhook answers 503, readiness fails). No state is kept in the client: once Redis is
back, the next call works again without a restart. For "nothing acknowledged is lost" Redis
must persist: `appendonly yes` (see the README for the settings).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from catbot.models import DeadLetter, InboundDM, Job, PendingJob, UserState
from catbot.store.base import SendSlots, StoreError
from catbot.store.group_commit import Call, GroupCommit

GROUP = "workers"
# Default client settings; any of them can be overridden in the URL's query string.
SOCKET_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 1.0
HEALTH_CHECK_INTERVAL_SECONDS = 10
# A consumer (one per daemon run) with nothing pending is forgotten after this long idle.
CONSUMER_IDLE_FORGET_MS = 3_600_000
# Group commit: at most this many events (more only when one call brings more) per enqueue
# script run. Bounds how long one run keeps Redis busy (a few milliseconds).
GROUP_COMMIT_MAX_EVENTS = 1000

# Shared by every script: the key prefix is ARGV[1], the turns stream is KEYS[1].
_PRELUDE = """
local P = ARGV[1]
local STREAM = KEYS[1]
local GROUP = 'workers'
local SHIFT = 1000000000000
local function ms(x) return string.format('%.0f', x) end

local function add_job(eid, uid, payload, now)
  local id = redis.call('INCR', P .. 'next_id')
  local jk = P .. 'job:' .. id
  redis.call('HSET', jk, 'eid', eid, 'uid', uid, 'payload', payload, 'enq', now,
             'avail', now, 'att', 0, 'tok', '')
  redis.call('ZADD', P .. 'queue', id, id)
  redis.call('HSET', P .. 'queued', eid, id)
  if redis.call('RPUSH', P .. 'uq:' .. uid, id) == 1 then
    redis.call('XADD', STREAM, '*', 'u', uid)
  end
  return id
end

-- The claimed job `id` (hash fields h) is done: drop it, give the user's next job a turn.
local function finish(id, uid, eid, turn)
  redis.call('XACK', STREAM, GROUP, turn)
  redis.call('XDEL', STREAM, turn)
  local uq = P .. 'uq:' .. uid
  redis.call('LREM', uq, 1, id)
  redis.call('DEL', P .. 'job:' .. id)
  redis.call('ZREM', P .. 'queue', id)
  redis.call('HDEL', P .. 'queued', eid)
  if redis.call('LLEN', uq) > 0 then
    redis.call('XADD', STREAM, '*', 'u', uid)
  end
end

-- ARGV[from] = user id ('' for no state), then field/value pairs: replace the user's state.
local function save_user(from)
  local uid = ARGV[from]
  if uid ~= '' then
    local key = P .. 'user:' .. uid
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(ARGV, from + 1))
  end
end
"""

_ENQUEUE = """
-- ARGV: P, dedupe ms, then one group per enqueue call: event count, now, and
-- (event id, user id, payload) per event. Returns a flag per event, all groups in order.
local ttl = ARGV[2]
local fresh = {}
local i = 3
while i <= #ARGV do
  local n, now = tonumber(ARGV[i]), ARGV[i + 1]
  i = i + 2
  for _ = 1, n do
    local eid = ARGV[i]
    local flag = 0
    if redis.call('HEXISTS', P .. 'queued', eid) == 0
       and redis.call('SET', P .. 'seen:' .. eid, '1', 'NX', 'PX', ttl) then
      add_job(eid, ARGV[i + 1], ARGV[i + 2], now)
      flag = 1
    end
    table.insert(fresh, flag)
    i = i + 3
  end
end
return fresh
"""

_CLAIM = """
-- ARGV: P, now ms, lease deadline ms, lease deadline, token, consumer.
local now_ms = tonumber(ARGV[2])
local deadline_ms = tonumber(ARGV[3])
local token, consumer = ARGV[5], ARGV[6]
local t = redis.call('TIME')
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local min_idle = math.max(0, server_ms - now_ms + SHIFT)

local function due_turn()
  -- The oldest pending turn whose deadline passed (a lost lease or a retry delay over).
  local cursor = '0-0'
  repeat
    local r = redis.call('XAUTOCLAIM', STREAM, GROUP, consumer, ms(min_idle), cursor,
                         'COUNT', 1)
    cursor = r[1]
    if #r[2] > 0 then return r[2][1] end
  until cursor == '0-0'
  return nil
end

local function new_turn()
  local r = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1,
                       'STREAMS', STREAM, '>')
  if not r then return nil end
  return r[1][2][1]
end

for _ = 1, 100 do
  local entry = due_turn() or new_turn()
  if not entry then return false end
  local turn, uid = entry[1], entry[2][2]
  local head = redis.call('LINDEX', P .. 'uq:' .. uid, 0)
  if head then
    local jk = P .. 'job:' .. head
    local att = redis.call('HINCRBY', jk, 'att', 1)
    redis.call('HSET', jk, 'tok', token, 'lease', ARGV[4], 'turn', turn)
    redis.call('XCLAIM', STREAM, GROUP, consumer, 0, turn, 'TIME', ms(deadline_ms - SHIFT),
               'JUSTID')
    local h = redis.call('HMGET', jk, 'payload', 'enq')
    return {head, h[1], att, h[2]}
  end
  -- A turn without a job cannot happen while the invariants hold; drop it if it does.
  redis.call('XACK', STREAM, GROUP, turn)
  redis.call('XDEL', STREAM, turn)
end
return false
"""

_EXTEND = """
-- ARGV: P, job id, token, lease deadline, lease deadline ms, consumer.
local jk = P .. 'job:' .. ARGV[2]
local h = redis.call('HMGET', jk, 'tok', 'turn')
if h[1] ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'lease', ARGV[4])
redis.call('XCLAIM', STREAM, GROUP, ARGV[6], 0, h[2], 'TIME',
           ms(tonumber(ARGV[5]) - SHIFT), 'JUSTID')
return 1
"""

_RELEASE = """
-- ARGV: P, job id, token, not before, not before ms, error, consumer.
local jk = P .. 'job:' .. ARGV[2]
local h = redis.call('HMGET', jk, 'tok', 'turn')
if h[1] ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'tok', '', 'lease', '', 'avail', ARGV[4], 'err', ARGV[6])
redis.call('XCLAIM', STREAM, GROUP, ARGV[7], 0, h[2], 'TIME',
           ms(tonumber(ARGV[5]) - SHIFT), 'JUSTID')
return 1
"""

_SAVE_REPLY = """
-- ARGV: P, job id, token, payload.
local jk = P .. 'job:' .. ARGV[2]
if redis.call('HGET', jk, 'tok') ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'payload', ARGV[4])
return 1
"""

_COMPLETE = """
-- ARGV: P, job id, token, then the user's state (see save_user).
local id = ARGV[2]
local h = redis.call('HMGET', P .. 'job:' .. id, 'tok', 'uid', 'eid', 'turn')
if h[1] ~= ARGV[3] then return 0 end
finish(id, h[2], h[3], h[4])
save_user(4)
return 1
"""

_DEAD_LETTER = """
-- ARGV: P, job id, token, dead letter record (JSON), then the user's state (see save_user).
local id = ARGV[2]
local h = redis.call('HMGET', P .. 'job:' .. id, 'tok', 'uid', 'eid', 'turn')
if h[1] ~= ARGV[3] then return 0 end
finish(id, h[2], h[3], h[4])
local seq = redis.call('INCR', P .. 'dead_seq')
redis.call('HSET', P .. 'dead', h[3], ARGV[4])
redis.call('ZADD', P .. 'dead_order', seq, h[3])
save_user(5)
return 1
"""

_RETRY_DEAD = """
-- ARGV: P, now, '*' for all or '', then event ids.
local ids = {}
if ARGV[3] == '*' then
  ids = redis.call('ZRANGE', P .. 'dead_order', 0, -1)
else
  for i = 4, #ARGV do table.insert(ids, ARGV[i]) end
end
local n = 0
for _, eid in ipairs(ids) do
  local record = redis.call('HGET', P .. 'dead', eid)
  if record then
    local d = cjson.decode(record)
    if redis.call('HEXISTS', P .. 'queued', eid) == 0 then
      add_job(eid, d['user_id'], d['payload'], ARGV[2])
    end
    redis.call('HDEL', P .. 'dead', eid)
    redis.call('ZREM', P .. 'dead_order', eid)
    n = n + 1
  end
end
return n
"""

_PENDING = """
-- ARGV: P, limit.
local limit = tonumber(ARGV[2])
local out = {}
if limit <= 0 then return out end
for _, id in ipairs(redis.call('ZRANGE', P .. 'queue', 0, limit - 1)) do
  table.insert(out, redis.call('HMGET', P .. 'job:' .. id, 'eid', 'uid', 'att', 'enq', 'avail',
                               'tok', 'err'))
end
return out
"""

_DEAD_LETTERS = """
-- ARGV: P, limit. Newest first.
local limit = tonumber(ARGV[2])
local out = {}
if limit <= 0 then return out end
for _, eid in ipairs(redis.call('ZREVRANGE', P .. 'dead_order', 0, limit - 1)) do
  local record = redis.call('HGET', P .. 'dead', eid)
  if record then table.insert(out, record) end
end
return out
"""

_TAKE_SEND_SLOT = """
-- ARGV: P, the budget's key (after P), longest window, then (window seconds, sends allowed)
-- pairs. The server's clock, so that every replica counts on the same one. Returns '0' when
-- a slot was taken, else the seconds until one may be free (as a string: Lua numbers come
-- back as integers).
local key = P .. ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local longest = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.6f', now - longest))
local delay = 0
for i = 4, #ARGV, 2 do
  local window, allowed = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local since = '(' .. string.format('%.6f', now - window)
  local n = redis.call('ZCOUNT', key, since, '+inf')
  if n >= allowed then
    -- Room opens when the oldest send still counted leaves the window.
    local r = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT',
                         n - allowed, 1)
    delay = math.max(delay, tonumber(r[2]) + window - now)
  end
end
if delay > 0 then return string.format('%.6f', delay) end
local seq = redis.call('INCR', P .. 'budget_seq')
redis.call('ZADD', key, string.format('%.6f', now), seq)
redis.call('PEXPIRE', key, math.ceil(longest * 1000) + 1000)
return '0'
"""

_READ_ONLY = "#!lua flags=no-writes\n"
_WRITES = "#!lua\n"


def _script(body: str, writes: bool = True) -> str:
    return (_WRITES if writes else _READ_ONLY) + _PRELUDE + body


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


class RedisStore:
    # Several daemons share the data: never hand back claims at start-up.
    single_owner = False

    def __init__(self, url: str, dedupe_seconds: float = 86400.0, owner: bool = True) -> None:
        """`url`: redis:// or rediss://, with `?prefix=NAME` for the key prefix and any of
        redis-py's connection options (`socket_timeout=...`) in the query string. `owner` is
        accepted for symmetry with SQLite and unused: a Redis store never owns its data
        alone."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = next((v for k, v in query if k == "prefix"), "catbot")
        self.prefix = prefix if prefix.endswith(":") else prefix + ":"
        self.url = urlunsplit(parts._replace(query=urlencode(
            [(k, v) for k, v in query if k != "prefix"])))
        self.dedupe_ms = max(1, _ms(dedupe_seconds))
        # One consumer name per run: XPENDING shows which replica holds which turn.
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stream = self.prefix + "turns"
        self.forget_consumers_idle_ms = CONSUMER_IDLE_FORGET_MS
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.group_commit = GroupCommit(self._enqueue_batch, GROUP_COMMIT_MAX_EVENTS)

    # Lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            client = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                client_name=self.consumer.replace(" ", "_"),
            )
        except (ValueError, RedisError) as exc:
            raise StoreError(f"bad Redis URL: {exc}") from exc
        self._client = client
        self._scripts = {
            name: client.register_script(_script(body, writes))
            for name, body, writes in (
                ("enqueue", _ENQUEUE, True), ("claim", _CLAIM, True),
                ("extend", _EXTEND, True), ("release", _RELEASE, True),
                ("save_reply", _SAVE_REPLY, True),
                ("complete", _COMPLETE, True), ("dead_letter", _DEAD_LETTER, True),
                ("retry_dead", _RETRY_DEAD, True), ("pending", _PENDING, False),
                ("dead_letters", _DEAD_LETTERS, False), ("send_slot", _TAKE_SEND_SLOT, True),
            )
        }
        try:
            await client.ping()
            await self._ensure_group()
        except AuthenticationError as exc:
            await self.close()
            # Redis' own wording ("HELLO must be called with the client already
            # authenticated...") does not say what to change.
            raise StoreError(
                f"cannot open Redis store {self._where()}: Redis refused the connection's "
                "credentials (the password in the store URL is missing or wrong)"
            ) from exc
        except RedisError as exc:
            await self.close()
            raise StoreError(f"cannot open Redis store {self._where()}: {exc}") from exc

    async def close(self) -> None:
        # Enqueues already under way finish (or fail) on the open client first.
        await self.group_commit.drain()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise StoreError("store is not open")
        return self._client

    def _where(self) -> str:
        """The URL without its credentials (`redis://:password@host`): fit for messages."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    async def _ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(self, name: str, *args: str | int | float) -> Any:
        """Run one script; Redis errors become StoreError. A consumer group lost with the
        data (Redis restarted without persistence) is created again."""
        script = self._scripts.get(name)
        if script is None:
            raise StoreError("store is not open")
        argv = [self.prefix, *args]
        try:
            try:
                return await script(keys=[self.stream], args=argv)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group()
                return await script(keys=[self.stream], args=argv)
        except RedisError as exc:
            raise StoreError(f"Redis {name} failed: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise StoreError(f"Redis unreachable: {type(exc).__name__}: {exc}") from exc

    async def check_writable(self) -> None:
        # A real write: fails when Redis is down, a read-only replica, out of memory
        # (maxmemory with noeviction) or refusing writes after a failed AOF/RDB write.
        try:
            await self.client.set(
                f"{self.prefix}heartbeat:{self.consumer}", repr(time.time()), px=60_000
            )
        except RedisError as exc:
            raise StoreError(f"Redis cannot take writes: {type(exc).__name__}: {exc}") from exc

    # Queue --------------------------------------------------------------------------------

    async def enqueue(
        self, events: Sequence[InboundDM], now: float, time_limit: float | None = None
    ) -> list[bool]:
        """Group commit: concurrent enqueues share one script run (one round trip, one AOF
        write and fsync).

        A call returns only after the script run holding its events was answered, that is
        written to the AOF (and fsynced with `appendfsync always`), exactly as if it had its
        own; calls arriving while a run is in flight wait for the next one, which takes all
        of them together. The run is atomic: it stores every event of the batch or none, and
        a failure fails every call of the batch.
        """
        return await self.group_commit.submit(events, now, time_limit)

    async def _enqueue_batch(self, batch: Sequence[Call]) -> list[list[bool]]:
        """One script run for every call's events; a flag list per call."""
        args: list[str | int | float] = [self.dedupe_ms]
        for events, now in batch:
            args += [len(events), repr(now)]
            for event in events:
                args += [event.event_id, event.sender_id, event.to_json()]
        flags = await self._run("enqueue", *args)
        if len(flags) != sum(len(events) for events, _ in batch):
            raise StoreError(f"Redis enqueue answered {len(flags)} flags")
        out: list[list[bool]] = []
        at = 0
        for events, _ in batch:
            out.append([bool(int(flag)) for flag in flags[at : at + len(events)]])
            at += len(events)
        return out

    async def claim(self, now: float, lease_seconds: float) -> Job | None:
        token = secrets.token_hex(8)
        lease_until = now + lease_seconds
        row = await self._run(
            "claim", _ms(now), _ms(lease_until), repr(lease_until), token, self.consumer
        )
        if not row:
            return None
        job_id, payload, attempts, enqueued_at = row
        event = InboundDM.from_json(payload)
        return Job(int(job_id), event, int(attempts), token, float(enqueued_at))

    async def extend(self, job: Job, now: float, lease_seconds: float) -> bool:
        lease_until = now + lease_seconds
        return bool(await self._run(
            "extend", job.job_id, job.claim_token, repr(lease_until), _ms(lease_until),
            self.consumer,
        ))

    async def complete(self, job: Job, state: UserState | None) -> bool:
        return bool(await self._run(
            "complete", job.job_id, job.claim_token, *_user_args(state)
        ))

    async def save_reply(self, job: Job, event: InboundDM) -> bool:
        return bool(await self._run(
            "save_reply", job.job_id, job.claim_token, event.to_json()
        ))

    async def release(self, job: Job, not_before: float, error: str) -> bool:
        return bool(await self._run(
            "release", job.job_id, job.claim_token, repr(not_before), _ms(not_before),
            error[:500], self.consumer,
        ))

    async def dead_letter(
        self, job: Job, reason: str, now: float, state: UserState | None
    ) -> bool:
        record = json.dumps({
            "event_id": job.event.event_id,
            "user_id": job.event.sender_id,
            "reason": reason[:500],
            "payload": job.event.to_json(),
            "failed_at": now,
        })
        return bool(await self._run(
            "dead_letter", job.job_id, job.claim_token, record, *_user_args(state)
        ))

    async def release_all_claims(self) -> int:
        # Shared by replicas: the others' claims are not ours to hand back. A crashed run's
        # claims return through XAUTOCLAIM once their lease is over.
        return 0

    async def depth(self) -> int:
        try:
            return int(await self.client.zcard(self.prefix + "queue"))
        except RedisError as exc:
            raise StoreError(f"Redis depth failed: {exc}") from exc

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        records = await self._run("dead_letters", limit)
        letters = []
        for raw in records:
            data = json.loads(raw)
            letters.append(DeadLetter(str(data["event_id"]), str(data["user_id"]),
                                      str(data["reason"]), float(data["failed_at"])))
        return letters

    async def pending(self, limit: int = 100) -> list[PendingJob]:
        rows = await self._run("pending", limit)
        return [
            PendingJob(str(eid), str(uid), int(att), float(enq), float(avail), bool(tok),
                       None if err is None else str(err))
            for eid, uid, att, enq, avail, tok, err in rows
            if eid is not None  # gone between the two reads: cannot happen inside a script
        ]

    async def retry_dead_letters(self, event_ids: Sequence[str] | None, now: float) -> int:
        if event_ids is not None and not event_ids:
            return 0
        selection = ["*"] if event_ids is None else ["", *event_ids]
        return int(await self._run("retry_dead", repr(now), *selection))

    async def prune(self, seen_before: float) -> int:
        """Event ids expire by themselves (SET PX); this only forgets consumers of finished
        runs that hold nothing, so the group's consumer list does not grow with each deploy."""
        try:
            consumers = await self.client.xinfo_consumers(self.stream, GROUP)
            for consumer in consumers:
                name = str(consumer["name"])
                if (name != self.consumer and int(consumer["pending"]) == 0
                        and int(consumer["idle"]) > self.forget_consumers_idle_ms):
                    await self.client.xgroup_delconsumer(self.stream, GROUP, name)
        except RedisError as exc:
            raise StoreError(f"Redis prune failed: {exc}") from exc
        return 0

    # X Chat keys ---------------------------------------------------------------------------

    async def save_conversation_keys(self, sealed: Mapping[str, bytes]) -> None:
        if not sealed:
            return
        # The client decodes answers as UTF-8 text: base64 keeps any blob intact.
        mapping: dict[Any, Any] = {
            cid: base64.b64encode(bytes(blob)).decode("ascii") for cid, blob in sealed.items()
        }
        try:
            await self.client.hset(self.prefix + "xchat_keys", mapping=mapping)
        except RedisError as exc:
            # Never the mapping in the message: the blobs are secrets.
            raise StoreError(f"Redis save_conversation_keys failed: {type(exc).__name__}") \
                from None

    async def load_conversation_keys(
        self, conversation_ids: Sequence[str] | None = None
    ) -> dict[str, bytes]:
        key = self.prefix + "xchat_keys"
        try:
            if conversation_ids is None:
                raw: Mapping[Any, Any] = await self.client.hgetall(key)
            elif not conversation_ids:
                return {}
            else:
                values = await self.client.hmget(key, list(conversation_ids))
                raw = dict(zip(conversation_ids, values, strict=True))
        except RedisError as exc:
            raise StoreError(f"Redis load_conversation_keys failed: {type(exc).__name__}") \
                from None
        return {str(cid): base64.b64decode(str(value))
                for cid, value in raw.items() if value is not None}

    # Users --------------------------------------------------------------------------------

    async def get_user(self, user_id: str) -> UserState:
        try:
            raw = await self.client.hgetall(f"{self.prefix}user:{user_id}")
        except RedisError as exc:
            raise StoreError(f"Redis get_user failed: {exc}") from exc
        if not raw:
            return UserState(user_id)
        data = {str(k): str(v) for k, v in raw.items()}
        last = data.get("last_fact_at")
        return UserState(
            user_id=user_id,
            opted_out=data.get("opted_out") == "1",
            last_fact_at=None if last is None else float(last),
            day=data.get("day", ""),
            replies_today=int(data.get("replies_today", "0")),
            seen_facts=frozenset(json.loads(data.get("seen_facts", "[]"))),
        )

    # The send budgets every replica shares ----------------------------------------------

    def shared_send_budget(self, family: str) -> SendSlots:
        # X counts the bot account's sends, whichever replica makes them.
        return functools.partial(self.take_send_slot, family=family)

    async def take_send_slot(self, windows: Mapping[float, int], family: str = "dm") -> float:
        """Take one send from the `family`'s budget every replica shares; 0.0 when taken,
        else the seconds until a slot may be free (nothing taken)."""
        # DMs keep the key they always had, so replicas of an older release share it still.
        key = "budget" if family == "dm" else f"budget:{family}"
        args: list[str | int | float] = [key, repr(float(max(windows)))]
        for window, allowed in windows.items():
            args += [repr(float(window)), int(allowed)]
        return float(await self._run("send_slot", *args))


def _user_args(state: UserState | None) -> list[str]:
    if state is None:
        return [""]
    fields = [
        state.user_id,
        "opted_out", "1" if state.opted_out else "0",
        "day", state.day,
        "replies_today", str(state.replies_today),
        "seen_facts", json.dumps(sorted(state.seen_facts)),
    ]
    if state.last_fact_at is not None:
        fields += ["last_fact_at", repr(state.last_fact_at)]
    return fields
