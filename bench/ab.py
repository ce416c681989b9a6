"""A/B: the same ingest and slow-DM measurements for several catbot source trees, in one run.

    python -m bench.ab --tree before=/tmp/v0 --tree after=/work/main [--rounds 2]

Each tree is a directory holding a `catbot` package; its daemon runs with PYTHONPATH set to
it (from a neutral working directory), so earlier versions of a file can be measured side by
side with the current one. Trees alternate within each round, which spreads drift in the
machine (other load, disk) over all of them. Used for the before/after figures of each
optimisation in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import load, run
from testkit.processes import Daemon, Emulator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--no-slow", action="store_true")
    p.add_argument("--log-level", default="WARNING", help="CATBOT_LOG_LEVEL of the daemons")
    a = p.parse_args()
    trees = [(t.split("=", 1)[0], str(Path(t.split("=", 1)[1]).resolve())) for t in a.tree]
    os.chdir(tempfile.gettempdir())  # `python -m catbot` must not find a tree in its cwd
    ns = argparse.Namespace(warmup=a.warmup, duration=a.duration, connections=a.connections,
                            threads=1, max_rps=30000, log_level=a.log_level,
                            event_loop="auto")
    rows: dict[str, dict[str, list[float]]] = {n: {} for n, _ in trees}
    with tempfile.TemporaryDirectory(prefix="catbot-ab-") as tmpdir:
        b = run.Bench(ns, Path(tmpdir))
        b.results["reference"] = {"rps": 1.0}
        parked = b.emulator()
        parked.faults(dm_delay_seconds=3600)
        slow = b.emulator()
        slow.faults(dm_delay_seconds=1.0)
        try:
            for rnd in range(a.rounds):
                for name, tree in trees:
                    out = rows[name]
                    d = _daemon(b, parked, tree, f"{name}-{rnd}-ingest",
                                {"CATBOT_WORKERS": "1", "CATBOT_SEND_TIMEOUT_SECONDS": "3600"})
                    key = f"{name}-{rnd}"
                    b._ingest_run(d, key, int(a.duration * ns.max_rps))
                    r = b.results[key]
                    for k, v in (("rps", r["rps"]), ("p50_ms", r["p50_us"] / 1000),
                                 ("p99_ms", r["p99_us"] / 1000)):
                        out.setdefault(k, []).append(v)
                    d.stop()
                    if not a.no_slow:
                        d = _daemon(b, slow, tree, f"{name}-{rnd}-slow", {})
                        s = asyncio.run(load.open_loop(d.webhook, run.SECRET, f"ab{rnd}{name}-",
                                                       a.rate, int(a.rate * a.slow_seconds)))
                        out.setdefault("slow_p50_ms", []).append(s["p50_ms"])
                        out.setdefault("slow_p99_ms", []).append(s["p99_ms"])
                        d.stop()
                    print(name, {k: round(v[-1], 2) for k, v in out.items()}, flush=True)
        finally:
            b.stop_all()
    print()
    print(f"{'tree':<16}{'ingest req/s':>14}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'500/s slow-DM p50':>19}{'p99 ms':>8}   (median of {a.rounds} rounds)")
    for name, _ in trees:
        m: dict[str, Any] = {k: statistics.median(v) for k, v in rows[name].items()}
        print(f"{name:<16}{m['rps']:>14.0f}{m['p50_ms']:>8.2f}{m['p99_ms']:>8.2f}"
              f"{m.get('slow_p50_ms', float('nan')):>19.2f}"
              f"{m.get('slow_p99_ms', float('nan')):>8.2f}")


def _daemon(b: run.Bench, emu: Emulator, tree: str, name: str, env: dict[str, str]) -> Daemon:
    os.environ["PYTHONPATH"] = tree + os.pathsep + str(run.HERE.parent)
    try:
        d, _ = b.daemon(emu, env, name)
    finally:
        os.environ.pop("PYTHONPATH", None)
    return d


if __name__ == "__main__":
    main()
