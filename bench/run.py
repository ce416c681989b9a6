"""catbot's benchmarks (issue 7): `make bench`, or `python -m bench.run [--quick]`.

Everything runs on loopback as real processes, in one run, side by side:

- reference: a bare aiohttp app answering 200 to the same POST (bench/reference.py);
- ingest: signed DM deliveries with unique ids, signature checked, durably enqueued
  (SQLite WAL synchronous=FULL; Redis with appendfsync always), 200 returned;
  both driven by wrk with the same Lua script (bench/bodies.lua), same connections;
- acknowledgement latency at a fixed offered rate (open loop, default 500/s) while the
  emulator's DM endpoint takes 1 s per call (Python generator, bench/load.py);
- event-to-reply latency (delivery posted -> the DM request arrives at the emulator),
  idle (one at a time) and loaded (during a fixed-rate stream of DMs that all need replies);
- resident memory idle and after N events (default 100,000); start-up time to ready;
- outbox under an emulator rate limit: replies per window and 429s (wasted calls);
- ingest of X-shaped deliveries (bench/xshaped.py: a `users` map with full profiles, 1.4 KB
  Account Activity and 2.5 KB X Activity API bodies), each flavour against a reference fed
  the same bodies, outbox parked and outbox live (the daemon answering through the emulator,
  which plays X with a DM rate limit the outbox keeps running into, and echoes every sent DM
  back to the webhook as X does).
- X Chat (bench/xchat_cost.py): the SDK's cost per message on the bot's side (decrypt +
  encrypt per reply, and the first message of a conversation, with its key change), against
  the webhook's own work on the same delivery, in-process.

Pure-ingest runs park the outbox: CATBOT_WORKERS=1 and an emulator whose DM endpoint
answers after an hour, so the one worker holds one job and never competes for the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import load, xchat_cost, xshaped
from testkit.processes import CREDENTIALS, Daemon, Emulator, free_port, http, wait_for

HERE = Path(__file__).resolve().parent
SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]

QUIET_ENV = {
    "CATBOT_COOLDOWN_SECONDS": "0",
    "CATBOT_DAILY_CAP": "1000000",
    "CATBOT_DM_BUDGET_15MIN": "1000000",
    "CATBOT_DM_BUDGET_24H": "1000000",
    "CATBOT_RETRY_INITIAL_SECONDS": "0.5",
    "CATBOT_RETRY_MAX_SECONDS": "30",
}


# X-shaped live runs: X's DM allowance squeezed into a short window, so that in a 10 s run
# the outbox keeps spending it and waiting for the next window.
LIVE_LIMIT = 200
LIVE_WINDOW = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return (f"{os.cpu_count()} CPU ({cpu}), {int(mem) // 1024} MB RAM, "
            f"Python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}")


def write_bodies(path: Path, prefix: str, count: int, users: int = 50_000,
                 shape: str = "minimal") -> float:
    """Pre-signed deliveries for wrk, one `signature<TAB>body` line each; returns the mean
    body size in bytes. `shape`: "minimal" (bench.load) or one of `xshaped.SHAPES`."""
    bodies = (load.signed_bodies(SECRET, prefix, count, users) if shape == "minimal"
              else xshaped.signed_bodies(SECRET, shape, prefix, count, users))
    size = 0
    with open(path, "wb") as out:
        for signature, body in bodies:
            size += len(body)
            out.write(signature.encode() + b"\t" + body + b"\n")
    return size / max(count, 1)


def wrk(url: str, bodies: Path, seconds: float, connections: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": "/webhook/twitter"}
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(HERE / "bodies.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    result: dict[str, Any] = json.loads(line[len("BENCH "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    non2xx = result["errors_status"]
    result["errors"] = non2xx + sum(result[k] for k in (
        "errors_connect", "errors_read", "errors_write", "errors_timeout"))
    return result


def counted(daemon: Daemon) -> dict[str, float]:
    m = daemon.metrics()
    return {fate: sum(v for k, v in m.items()
                      if k.startswith("catbot_events_total") and f'fate="{fate}"' in k)
            for fate in ("enqueued", "duplicate")}


def outbox_counters(daemon: Daemon) -> dict[str, float]:
    """The daemon's own view of its outbox and of the events X sent back (cumulative)."""
    m = daemon.metrics()

    def total(prefix: str, label: str | None = None) -> float:
        return sum(v for k, v in m.items()
                   if k.startswith(prefix) and (label is None or label in k))

    return {
        "sent": total("catbot_dms_sent_total", 'outcome="sent"'),
        "not_sent": total("catbot_dms_sent_total") - total("catbot_dms_sent_total",
                                                           'outcome="sent"'),
        "gate_closed_remaining_0": total("catbot_rate_limit_waits_total", "x_remaining"),
        "gate_closed_429": total("catbot_rate_limit_waits_total", "x_429"),
        "events_total": total("catbot_events_total"),
        "enqueued": total("catbot_events_total", 'fate="enqueued"'),
        "own": total("catbot_events_total", 'fate="own"'),
        "depth": total("catbot_outbox_depth"),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.results: dict[str, Any] = {"machine": machine(), "args": vars(args)}
        self.emulators: list[Emulator] = []
        self.daemons: list[Daemon] = []

    # Processes -------------------------------------------------------------------------

    def emulator(self, extra_args: tuple[str, ...] = (), webhook_url: str | None = None,
                 api: str = "v2") -> Emulator:
        emu = Emulator(self.tmp, free_port(), webhook_url, api=api,
                       extra_env={"CATBOT_LOG_LEVEL": "WARNING"}, extra_args=extra_args)
        emu.start()
        self.emulators.append(emu)
        return emu

    def daemon(self, emu: Emulator, env: Mapping[str, str], name: str,
               port: int | None = None) -> tuple[Daemon, float]:
        env = {**QUIET_ENV, "CATBOT_LOG_LEVEL": self.args.log_level,
               "CATBOT_EVENT_LOOP": self.args.event_loop, **env}
        d = Daemon(self.tmp, emu.port, port or free_port(), free_port(), env,
                   db=self.tmp / f"{name}.db")
        d.env["CATBOT_SHUTDOWN_GRACE_SECONDS"] = "2"
        started = time.monotonic()
        d.start_process_only()
        wait_for(lambda: d.alive and http("GET", d.internal + "/readyz", timeout=1)[0] == 200,
                 interval=0.005, what=f"daemon {name} ready")
        ready = time.monotonic() - started
        self.daemons.append(d)
        return d, ready

    def stop_all(self) -> None:
        for p in [*self.daemons, *self.emulators]:
            p.stop()

    # Sections --------------------------------------------------------------------------

    def ingest(self) -> None:
        a = self.args
        per_run = int(a.duration * a.max_rps)
        ref_bodies = self.tmp / "ref.bodies"
        write_bodies(ref_bodies, "ref", 20_000)
        self.results["reference"] = self._reference(ref_bodies, uvloop=False)
        if a.reference_uvloop and _have_uvloop():
            self.results["reference_uvloop"] = self._reference(ref_bodies, uvloop=True)

        parked = self.emulator()
        parked.faults(dm_delay_seconds=3600)
        ingest_env = {"CATBOT_WORKERS": "1", "CATBOT_SEND_TIMEOUT_SECONDS": "3600"}

        # SQLite (also start-up, idle memory, memory after N events).
        d, ready = self.daemon(parked, ingest_env, "ingest-sqlite")
        self.results["startup_s"] = ready
        time.sleep(1.0)
        self.results["rss_idle_mb"] = rss_mb(d.proc.pid)  # type: ignore[union-attr]
        self._ingest_run(d, "sqlite", per_run)
        total = counted(d)["enqueued"]
        fill = 0
        while total < a.memory_events:
            need = int(a.memory_events - total)
            bodies = self.tmp / f"fill{fill}.bodies"
            write_bodies(bodies, f"fill{fill}-", need)
            wrk(d.webhook, bodies, max(1.0, need / max(self.results["sqlite"]["rps"], 1) * 0.9),
                a.connections, a.threads)
            fill += 1
            total = counted(d)["enqueued"]
        self.results["memory_events"] = total
        self.results["rss_after_mb"] = rss_mb(d.proc.pid)  # type: ignore[union-attr]
        d.stop()

        if shutil.which("redis-server") and not a.no_redis:
            from testkit.redis_server import RedisServer

            server = RedisServer(self.tmp / "redis", appendfsync=a.redis_appendfsync).start()
            try:
                d, _ = self.daemon(parked, {**ingest_env, "CATBOT_STORE_URL": server.url},
                                   "ingest-redis")
                self._ingest_run(d, "redis", per_run)
                d.stop()
            finally:
                server.stop()
        parked.stop()

    def x_shaped(self) -> None:
        """Ingest of X-shaped deliveries, per flavour: outbox parked, then outbox live.

        Each flavour's rows are compared with the reference fed the same bodies. One body
        file serves both daemons of a flavour (each has its own fresh database); a separate
        warm-up file keeps the measured ids new to each daemon.
        """
        a = self.args
        per_run = int(a.duration * a.x_max_rps)
        for shape in xshaped.SHAPES:
            ref_bodies = self.tmp / f"x-{shape}-ref.bodies"
            size = write_bodies(ref_bodies, f"x-{shape}-ref-", 20_000, shape=shape)
            ref = self._reference(ref_bodies, uvloop=False)
            ref_bodies.unlink()
            ref["body_bytes"] = size
            self.results[f"x_{shape}_reference"] = ref
            warm = self.tmp / f"x-{shape}-warm.bodies"
            write_bodies(warm, f"x-{shape}-warm-", int(a.warmup * a.x_max_rps), shape=shape)
            bodies = self.tmp / f"x-{shape}.bodies"
            write_bodies(bodies, f"x-{shape}-", per_run, shape=shape)
            self._x_parked(shape, warm, bodies)
            self._x_live(shape, warm, bodies)
            warm.unlink()
            bodies.unlink()

    def _x_parked(self, shape: str, warm: Path, bodies: Path) -> None:
        parked = self.emulator()
        parked.faults(dm_delay_seconds=3600)
        d, _ = self.daemon(parked, {"CATBOT_WORKERS": "1",
                                    "CATBOT_SEND_TIMEOUT_SECONDS": "3600"}, f"x-{shape}-parked")
        self.results[f"x_{shape}_parked"] = self._x_run(d, shape, warm, bodies, parked, False)
        d.stop()
        parked.stop()

    def _x_live(self, shape: str, warm: Path, bodies: Path) -> None:
        """The daemon answers every DM through the emulator playing X (its flavour's echo of
        each sent DM included), under a DM rate limit the outbox keeps running into."""
        a = self.args
        port = free_port()
        webhook = f"http://127.0.0.1:{port}/webhook/twitter"
        api = "v2" if shape == "aaa" else "activity"
        emu = self.emulator(("--dm-rate-limit", str(a.live_limit),
                             "--dm-rate-window", str(a.live_window)), webhook_url=webhook, api=api)
        d, _ = self.daemon(emu, {"CATBOT_X_API": api,
                                 "CATBOT_RATE_LIMIT_DEFAULT_WAIT_SECONDS": "1"},
                           f"x-{shape}-live", port=port)
        emu.wait_webhook_valid()
        result = self._x_run(d, shape, warm, bodies, emu, True)
        self.results[f"x_{shape}_live"] = result
        d.stop()
        emu.stop()

    def _x_run(self, d: Daemon, shape: str, warm: Path, bodies: Path,
               emu: Emulator, live: bool) -> dict[str, Any]:
        a = self.args
        wrk(d.webhook, warm, a.warmup, a.connections, a.threads)
        pids = {"daemon": d.proc.pid, "emulator": emu.proc.pid}  # type: ignore[union-attr]
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        before, started = outbox_counters(d), time.time()
        result = wrk(d.webhook, bodies, a.duration, a.connections, a.threads)
        ended, after = time.time(), outbox_counters(d)
        # CPU per second of run: on loopback the emulator playing X shares the cores.
        result["cpu"] = {name: (cpu_s(pid) - cpu_before[name]) / (ended - started)
                         for name, pid in pids.items()}
        delta = {k: after[k] - before[k] for k in after if k != "depth"}
        result["enqueued"] = delta["enqueued"]
        result["ratio"] = result["rps"] / self.results[f"x_{shape}_reference"]["rps"]
        result["ratio_minimal_reference"] = result["rps"] / self.results["reference"]["rps"] \
            if "reference" in self.results else None
        if live:
            sends = [r for r in _dm_requests(emu, started, None) if r["at"] <= ended]
            ok = sum(1 for r in sends if 200 <= int(r.get("status") or 0) < 300)
            result["outbox"] = {
                "replies": ok, "replies_per_s": ok / max(ended - started, 1e-9),
                "refused_429": sum(1 for r in sends if int(r.get("status") or 0) == 429),
                "limit": a.live_limit, "window_s": a.live_window,
                "gate_closed": delta["gate_closed_remaining_0"] + delta["gate_closed_429"],
                "echoes_ignored": delta["own"], "backlog_after": after["depth"],
            }
        return result

    def _reference(self, bodies: Path, uvloop: bool) -> dict[str, Any]:
        a = self.args
        ref_port = free_port()
        ref = subprocess.Popen(
            [sys.executable, "-m", "bench.reference", "--port", str(ref_port)]
            + (["--uvloop"] if uvloop else []),
            cwd=HERE.parent,
        )
        try:
            wait_for(lambda: http("GET", f"http://127.0.0.1:{ref_port}/readyz")[0] == 200)
            url = f"http://127.0.0.1:{ref_port}/webhook/twitter"
            wrk(url, bodies, a.warmup, a.connections, a.threads)
            result = wrk(url, bodies, a.duration, a.connections, a.threads)
            result["rss_mb"] = rss_mb(ref.pid)
            return result
        finally:
            ref.terminate()
            ref.wait(10)

    def _ingest_run(self, d: Daemon, name: str, per_run: int) -> None:
        a = self.args
        warm = self.tmp / f"{name}-warm.bodies"
        write_bodies(warm, f"{name}-warm-", int(a.warmup * a.max_rps))
        wrk(d.webhook, warm, a.warmup, a.connections, a.threads)
        bodies = self.tmp / f"{name}.bodies"
        write_bodies(bodies, f"{name}-", per_run)
        before = counted(d)
        result = wrk(d.webhook, bodies, a.duration, a.connections, a.threads)
        after = counted(d)
        result["enqueued"] = after["enqueued"] - before["enqueued"]
        result["duplicates"] = after["duplicate"] - before["duplicate"]
        result["ratio"] = result["rps"] / self.results["reference"]["rps"]
        self.results[name] = result

    def slow_ack(self) -> None:
        a = self.args
        emu = self.emulator()
        emu.faults(dm_delay_seconds=1.0)
        d, _ = self.daemon(emu, {}, "slow-ack")
        n = int(a.rate * a.slow_seconds)
        lat = asyncio.run(load.open_loop(d.webhook, SECRET, "slow-", a.rate, n))
        self.results["slow_ack"] = lat
        d.stop()
        emu.stop()

    def reply_latency(self) -> None:
        a = self.args
        emu = self.emulator(("--dm-rate-limit", "100000000"))
        d, _ = self.daemon(emu, {}, "e2r")
        idle = asyncio.run(load.event_to_reply_idle(d.webhook, emu.base, SECRET, a.idle_events))
        self.results["e2r_idle"] = idle
        loaded = asyncio.run(load.event_to_reply_loaded(
            d.webhook, emu.base, SECRET, a.loaded_rate, int(a.loaded_rate * a.slow_seconds)))
        self.results["e2r_loaded"] = loaded
        d.stop()
        emu.stop()

    def xchat_cost(self) -> None:
        quick = self.args.quick
        self.results["xchat_cost"] = xchat_cost.measure(
            samples=500 if quick else 2000, first_samples=100 if quick else 300
        )

    def outbox_rate(self) -> None:
        a = self.args
        limit, window = a.rl_limit, a.rl_window
        emu = self.emulator(("--dm-rate-limit", str(limit), "--dm-rate-window", str(window)))
        d, _ = self.daemon(emu, {"CATBOT_RATE_LIMIT_DEFAULT_WAIT_SECONDS": "1"}, "ratelimit")
        events = limit * a.rl_windows + limit // 2
        started = time.time()
        asyncio.run(load.post_many(d.webhook, SECRET, "rl-", events))
        with contextlib.suppress(AssertionError):  # reported as replies < events
            wait_for(lambda: len(_dm_requests(emu, started, 200)) >= events,
                     timeout=window * (a.rl_windows + 3) + 5, interval=0.2, what="all replies")
        oks = sorted(r["at"] for r in _dm_requests(emu, started, 200))
        refused = len(_dm_requests(emu, started, 429))
        other = len(_dm_requests(emu, started, None)) - len(oks) - refused
        # Bursts: replies separated by less than half a window belong to one burst.
        bursts: list[list[float]] = []
        for t in oks:
            if bursts and t - bursts[-1][-1] < window / 2:
                bursts[-1].append(t)
            else:
                bursts.append([t])
        per_window = [len(b) for b in bursts]
        gaps = [round(b[0] - a_[0], 2) for a_, b in itertools.pairwise(bursts)]
        t0 = oks[0] if oks else started
        self.results["outbox_rate"] = {
            "limit": limit, "window_s": window, "events": events, "replies": len(oks),
            "refused_429": refused, "other_calls": other, "per_window": per_window,
            "burst_intervals_s": gaps, "span_s": (oks[-1] - t0) if oks else 0.0,
        }
        d.stop()
        emu.stop()


def _dm_requests(emu: Emulator, since: float, status: int | None) -> list[dict[str, Any]]:
    """DM sends seen by the emulator since `since`; status 200 means any 2xx."""
    _, payload, _ = http("GET", f"{emu.base}/_emulator/requests?route=dm&since={since}")

    def wanted(code: int) -> bool:
        if status is None:
            return True
        return 200 <= code < 300 if status == 200 else code == status

    return [r for r in payload["requests"]
            if r.get("method") == "POST" and wanted(int(r.get("status") or 0))]


def _have_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def table(r: dict[str, Any]) -> str:
    loop = "uvloop" if r["args"]["event_loop"] == "auto" and _have_uvloop() else "asyncio"
    rows = [
        f"machine: {r['machine']}",
        f"catbot event loop: {loop}; log level {r['args']['log_level']}; "
        f"ratios against the bare aiohttp reference (default asyncio loop)",
        "",
    ]
    ref = r.get("reference")
    if ref:
        rows.append(f"{'ingest (wrk, c=' + str(r['args']['connections']) + ')':<28}"
                    f"{'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
                    f" {'errors':>6} {'enqueued':>9} {'re-sent':>7}")
        for name in ("reference", "reference_uvloop", "sqlite", "redis"):
            x = r.get(name)
            if not x:
                continue
            label = {"reference": "bare aiohttp (reference)",
                     "reference_uvloop": "bare aiohttp + uvloop", "sqlite": "catbot, SQLite",
                     "redis": f"catbot, Redis ({r['args']['redis_appendfsync']})"}[name]
            rows.append(f"{label:<28}{x['rps']:>9.0f} {x['rps'] / ref['rps']:>6.2f}"
                        f" {ms(x['p50_us']):>8} {ms(x['p99_us']):>8} {ms(x['p999_us']):>9}"
                        f" {x['errors']:>6} {x.get('enqueued', '-'):>9}"
                        f" {x.get('wrapped', '-') if 'enqueued' in x else '-':>7}")
        rows.append("")
    rows.extend(_x_shaped_rows(r))
    if "slow_ack" in r:
        s = r["slow_ack"]
        rows.append(f"ack latency at {s['offered_rate']:.0f}/s offered, DM endpoint 1 s/call: "
                    f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                    f"p99.9 {s['p999_ms']:.2f} ms, max {s['max_ms']:.1f} ms "
                    f"({s['ok']}/{s['sent']} acknowledged, achieved {s['achieved_rate']:.0f}/s)")
    for key, label in (("e2r_idle", "event-to-reply, idle"),
                       ("e2r_loaded", "event-to-reply, loaded")):
        if key in r:
            e = r[key]
            extra = f" during {e['offered_rate']:.0f}/s" if "offered_rate" in e else ""
            rows.append(f"{label}{extra}: p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms,"
                        f" max {e['max_ms']:.1f} ms ({e['replied']}/{e['sent']} replied)")
    if "startup_s" in r:
        rows.append(f"start-up to ready: {r['startup_s']:.2f} s; RSS idle "
                    f"{r['rss_idle_mb']:.1f} MB, after {r['memory_events']:.0f} events "
                    f"{r['rss_after_mb']:.1f} MB")
    if "outbox_rate" in r:
        o = r["outbox_rate"]
        rows.append(f"outbox under a limit of {o['limit']} per {o['window_s']} s: "
                    f"{o['replies']}/{o['events']} replies, per window {o['per_window']} "
                    f"(bursts {o['burst_intervals_s']} s apart), "
                    f"429s (wasted calls) {o['refused_429']}, other failed calls "
                    f"{o['other_calls']}")
    if "xchat_cost" in r:
        rows += ["", *xchat_cost.rows(r["xchat_cost"])]
    return "\n".join(rows)


def _x_shaped_rows(r: dict[str, Any]) -> list[str]:
    """The X-shaped ingest rows: each flavour's ratio is against the reference fed the same
    bodies (in brackets: against the minimal-body reference above)."""
    rows: list[str] = []
    flavours = {"aaa": "Account Activity", "xaa": "X Activity API"}
    for shape, flavour in flavours.items():
        ref = r.get(f"x_{shape}_reference")
        if not ref:
            continue
        if not rows:
            rows.append(f"{'X-shaped DMs (wrk, c=' + str(r['args']['connections']) + ')':<32}"
                        f"{'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}"
                        f" {'p99.9 ms':>9} {'errors':>6} {'enqueued':>9} {'re-sent':>7}")
        rows.append(f"{flavour}, {ref['body_bytes'] / 1024:.2f} KB bodies:")
        minimal = r.get("reference")
        for key, label in (("reference", "bare aiohttp, same bodies"),
                           ("parked", "catbot SQLite, outbox parked"),
                           ("live", "catbot SQLite, outbox live")):
            x = r.get(f"x_{shape}_{key}")
            if not x:
                continue
            ratio = x["rps"] / ref["rps"]
            vs_min = f" ({x['rps'] / minimal['rps']:.2f})" if minimal else ""
            enq = f"{x['enqueued']:.0f}" if "enqueued" in x else "-"
            wrapped = x.get("wrapped", "-") if "enqueued" in x else "-"
            cpu = x.get("cpu")
            cpu_text = (f"  CPU: catbot {cpu['daemon']:.2f}, emulator {cpu['emulator']:.2f}"
                        if cpu else "")
            rows.append(f"  {label:<30}{x['rps']:>9.0f} {ratio:>6.2f} {ms(x['p50_us']):>8}"
                        f" {ms(x['p99_us']):>8} {ms(x['p999_us']):>9} {x['errors']:>6}"
                        f" {enq:>9} {wrapped:>7}{vs_min}{cpu_text}")
            o = x.get("outbox")
            if o:
                rows.append(f"    outbox during the run: {o['replies']} replies "
                            f"({o['replies_per_s']:.0f}/s, X allows {o['limit']} per "
                            f"{o['window_s']:g} s), gate closed {o['gate_closed']:.0f}x, "
                            f"429s {o['refused_429']}, own DMs echoed back and ignored "
                            f"{o['echoes_ignored']:.0f}, backlog after {o['backlog_after']:.0f}")
    if rows:
        rows += ["  (ratio: against the bare aiohttp reference fed the same bodies; in brackets:"
                 " against the minimal-body reference above; CPU: cores used during the run)",
                 ""]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description="catbot benchmarks (issue 7)")
    p.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--max-rps", type=float, default=30000,
                   help="sizes the pre-signed body files (ids never repeat below this)")
    p.add_argument("--rate", type=float, default=500.0, help="offered rate, slow-DM ack test")
    p.add_argument("--slow-seconds", type=float, default=10.0)
    p.add_argument("--idle-events", type=int, default=50)
    p.add_argument("--loaded-rate", type=float, default=200.0)
    p.add_argument("--memory-events", type=int, default=100_000)
    p.add_argument("--rl-limit", type=int, default=10)
    p.add_argument("--rl-window", type=float, default=3.0)
    p.add_argument("--rl-windows", type=int, default=3)
    p.add_argument("--x-max-rps", type=float, default=20000,
                   help="sizes the X-shaped body files (ids never repeat below this)")
    p.add_argument("--live-limit", type=int, default=LIVE_LIMIT,
                   help="X-shaped live runs: DM sends X (the emulator) allows per window")
    p.add_argument("--live-window", type=float, default=LIVE_WINDOW,
                   help="X-shaped live runs: the rate-limit window, seconds")
    p.add_argument("--redis-appendfsync", default="always")
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--reference-uvloop", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the reference on uvloop (when installed)")
    p.add_argument("--log-level", default="WARNING", help="the daemons' CATBOT_LOG_LEVEL")
    p.add_argument("--event-loop", default="auto", choices=["auto", "asyncio"],
                   help="the daemons' CATBOT_EVENT_LOOP (auto: uvloop when installed)")
    p.add_argument("--only",
                   default="ingest,x_shaped,slow_ack,reply_latency,outbox_rate,xchat_cost")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args()
    if a.quick:
        a.duration, a.warmup, a.slow_seconds = 4.0, 1.0, 4.0
        a.memory_events = min(a.memory_events, 20_000)
        a.idle_events = 20
    with tempfile.TemporaryDirectory(prefix="catbot-bench-") as tmpdir:
        b = Bench(a, Path(tmpdir))
        try:
            for section in a.only.split(","):
                getattr(b, section)()
        finally:
            b.stop_all()
    print(table(b.results))
    if a.json:
        a.json.write_text(json.dumps(b.results, indent=2, default=str))


if __name__ == "__main__":
    main()
