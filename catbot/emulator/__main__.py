"""`python -m catbot.emulator`: the emulator alone, without the daemon's CLI."""

from __future__ import annotations

import argparse
import sys

from catbot.emulator.cli import configure_parser, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m catbot.emulator", description="Play X on loopback for catbot."
    )
    configure_parser(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
