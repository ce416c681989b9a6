"""Fixtures shared by the emulator tests (`tests/test_emulator*.py`), defined in
`tests/emulator_fixtures.py` and made visible here so test functions can request them by name.
"""

from tests.emulator_fixtures import (
    http,
    make_api,
    make_control,
    make_emulator,
    make_receiver,
    receiver,
    serving,
)

__all__ = [
    "http",
    "make_api",
    "make_control",
    "make_emulator",
    "make_receiver",
    "receiver",
    "serving",
]
