"""The command-line programs around the daemon, one module per `catbot <command>` group.

`cli` builds the parser, runs the daemon (`catbot run`) and hands every other command to
its module: `demo`, `devmode` (`catbot dev`, with `tunnel` and `ports`), `admin`
(`webhooks`, `subscriptions`), `doctor`, `outbox` and `xchat`. The emulator's command lives
with the emulator (`catbot.emulator.cli`) so that it stays an independent peer.

Nothing in the daemon imports this package: commands sit on top of `app` and the parts
below it, never the other way round.
"""

from catbot.commands.cli import main

__all__ = ["main"]
