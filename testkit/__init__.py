"""Loopback helpers shared by the tests and the benchmarks; never shipped in the catbot wheel.

- `processes`: the emulator and the daemon as real `python -m catbot` processes, with
  `free_port`, `http`, `wait_for` and the test credentials (`CREDENTIALS`, `BOT_ID`).
- `redis_server`: a real `redis-server` on a free loopback port.
- `xchat_builders`: a friend with a real X Chat identity and the deliveries X's server builds.

Importable from the repository root, where pytest (`pythonpath`) and `python -m bench.run`
both run.
"""
