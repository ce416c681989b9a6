"""catbot: a webhook daemon that answers direct messages on X with cat facts.

The daemon is `app` over `webhook`, `store`, `outbox`, `brain`, `facts`, `x` and `xchat`;
the command-line programs around it are in `commands`, the local X in `emulator`. The path
of a message through them, and the import rules: docs/architecture.md.
"""

__version__ = "0.1.0"
