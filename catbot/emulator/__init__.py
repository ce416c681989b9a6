"""A local stand-in for X: DM endpoints, signed webhook deliveries, CRC and a control API.

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
