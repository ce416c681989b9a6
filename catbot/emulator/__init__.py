"""A local stand-in for X: DM endpoints, signed webhook deliveries, CRC and a control API.

The manual (control API, X routes played, faults, credentials, chat page) is
docs/emulator.md. What the emulator remembers lives in `state`, one room per job.

X's own management routes are served too, so an unmodified X client can run against it:
webhooks and Account Activity subscriptions (`management_v2`), X Activity API subscriptions
(`management_activity`), v1.1 premium environments (`management_v1`), app-only tokens and
"who am I" (`auth_routes`). One registry (`webhooks`, `subscriptions`) applies X's rules and
tier limits to all of them, to the start-up `--webhook-url` and to the control API; deliveries
follow the subscriptions it holds, and `recheck` re-runs the CRC periodically.

Every outgoing delivery passes through `pipeline` (spreading over several webhooks, injected
duplicates and reordering, X-style redelivery); every X request through `traffic` (injected
latency, dropped connections, the request log). `faults` parses what `control` injects.

It imports nothing from the daemon except `catbot.signing`, so that the daemon is tested
against an independent peer rather than against its own assumptions.
"""

from catbot.emulator.app import RunningEmulator, build_app, start_emulator
from catbot.emulator.config import ConfigError, EmulatorConfig, config_from_env

__all__ = [
    "ConfigError",
    "EmulatorConfig",
    "RunningEmulator",
    "build_app",
    "config_from_env",
    "start_emulator",
]
