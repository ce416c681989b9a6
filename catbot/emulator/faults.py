"""Injected faults: what X does wrong on request, set through `/_emulator/faults`.

`Faults.from_json` parses a control request strictly (an unknown or ill-typed field is a
`ValueError` naming it); `POST` replaces every fault, `PATCH` changes only the fields given.
Time-boxed faults (`*_for_seconds`) start when they are set and show their remaining time.
Random faults draw from one `random.Random` seeded by `seed`, so a test can replay them.
The meaning of each field is documented in docs/emulator.md.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FAULT_DEFAULT_RESET_IN = 1.0
# X's codes for a DM that can never be sent to this recipient (all answered with HTTP 403).
PERMANENT_DM_CODES = frozenset({150, 151, 226, 349})
# Route classes usable as latency keys, beside "*" and path patterns.
ROUTE_CLASSES = ("dm", "xchat", "tweets", "webhooks", "auth")
# The send routes whose trouble is injected field for field alike.
SendFamily = Literal["dm", "xchat"]
_MAX_SECONDS = 3600.0
_MAX_LATENCY_KEYS = 50


def route_class(path: str) -> str:
    """The class of a route for latency keys and the request log."""
    if path.startswith("/_emulator/"):
        return "control"
    if path.startswith(("/2/dm_conversations/", "/1.1/direct_messages/")):
        return "dm"
    # X Chat: the conversation routes and the public-key directory (before "/2/users/").
    if path.startswith("/2/chat/") or (
        path.startswith("/2/users/") and path.endswith("/public_keys")
    ):
        return "xchat"
    if path == "/2/tweets" or path.startswith("/2/tweets/"):
        return "tweets"
    if path.startswith(
        ("/2/webhooks", "/2/account_activity/", "/2/activity/", "/1.1/account_activity/")
    ):
        return "webhooks"
    if path.startswith(("/oauth2/", "/2/users/", "/1.1/account/")):
        return "auth"
    return "other"


@dataclass
class Faults:
    # --- the DM send routes ----------------------------------------------------------
    dm_delay_seconds: float = 0.0
    dm_fail_next: int = 0
    dm_fail_status: int = 503
    dm_fail_ratio: float = 0.0
    dm_fail_until: float | None = None  # set through dm_fail_for_seconds
    dm_drop_next: int = 0
    dm_drop_ratio: float = 0.0
    dm_rate_limit_next: int = 0
    dm_rate_limit_until: float | None = None  # set through dm_rate_limit_for_seconds
    # None: answer the injected 429 without rate-limit headers, as X sometimes does.
    dm_rate_limit_reset_in: float | None = FAULT_DEFAULT_RESET_IN
    dm_budget_limit: int | None = None
    dm_budget_window: float | None = None
    forbidden_recipients: frozenset[str] = frozenset()
    automated_recipients: frozenset[str] = frozenset()
    forbidden_codes: dict[str, int] = field(default_factory=dict)
    # --- the X Chat send route (POST /2/chat/conversations/{id}/messages) -----------------
    # The same kinds of trouble as DM sends, on X Chat's own allowance.
    xchat_delay_seconds: float = 0.0
    xchat_fail_next: int = 0
    xchat_fail_status: int = 503
    xchat_fail_until: float | None = None  # set through xchat_fail_for_seconds
    xchat_drop_next: int = 0
    xchat_rate_limit_next: int = 0
    xchat_rate_limit_until: float | None = None  # set through xchat_rate_limit_for_seconds
    xchat_rate_limit_reset_in: float | None = FAULT_DEFAULT_RESET_IN
    xchat_budget_limit: int | None = None
    xchat_budget_window: float | None = None
    xchat_forbidden_recipients: frozenset[str] = frozenset()
    # --- the post route (POST /2/tweets) -------------------------------------------------
    post_fail_next: int = 0
    post_fail_status: int = 503
    post_rate_limit_next: int = 0
    # --- any X route -------------------------------------------------------------------
    latency: dict[str, float] = field(default_factory=dict)
    # --- outgoing deliveries and CRC -----------------------------------------------------
    deliver_duplicates_ratio: float = 0.0
    reorder_window: float = 0.0
    redelivery_delays: tuple[float, ...] | None = None
    delivery_timeout: float | None = None
    crc_timeout: float | None = None
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    # --- reading -----------------------------------------------------------------------

    def chance(self, ratio: float) -> bool:
        return ratio > 0 and self.rng.random() < ratio

    def refusal_code(self, recipient_id: str) -> int | None:
        """The permanent 403 code for DMs to this user, if one is injected."""
        if recipient_id in self.forbidden_codes:
            return self.forbidden_codes[recipient_id]
        if recipient_id in self.automated_recipients:
            return 226
        if recipient_id in self.forbidden_recipients:
            return 349
        return None

    def injected_rate_limit(
        self, family: SendFamily, limit: int, now: float
    ) -> dict[str, str] | None:
        """Headers of an injected 429 on one family's sends (empty when it carries none), or
        None for no 429. Spends one of `<family>_rate_limit_next` when that is what fires."""
        # The families name their fields alike (`dm_...`, `xchat_...`), so one reading
        # serves both.
        until: float | None = getattr(self, f"{family}_rate_limit_until")
        pending: int = getattr(self, f"{family}_rate_limit_next")
        if until is not None and now < until:
            reset: float | None = until
        elif pending > 0:
            setattr(self, f"{family}_rate_limit_next", pending - 1)
            reset = None
        else:
            return None
        reset_in: float | None = getattr(self, f"{family}_rate_limit_reset_in")
        if reset_in is None:
            return {}
        if reset is None:
            reset = now + reset_in
        return {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(math.ceil(reset)),
        }

    def injected_failure(self, family: SendFamily, now: float) -> bool:
        """Whether an injected 5xx answers this send: the next-N count first, then an outage
        window, then (DMs only) the random ratio."""
        pending: int = getattr(self, f"{family}_fail_next")
        if pending > 0:
            setattr(self, f"{family}_fail_next", pending - 1)
            return True
        until: float | None = getattr(self, f"{family}_fail_until")
        if until is not None and now < until:
            return True
        return self.chance(getattr(self, f"{family}_fail_ratio", 0.0))

    def latency_for(self, method: str, path: str, canonical: str | None) -> float:
        """The injected latency of a request: the largest of the matching entries."""
        if not self.latency:
            return 0.0
        cls = route_class(path)
        delay = 0.0
        for key, seconds in self.latency.items():
            if _latency_key_matches(key, method, path, canonical, cls):
                delay = max(delay, seconds)
        return delay

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "dm_delay_seconds": self.dm_delay_seconds,
            "dm_fail_next": self.dm_fail_next,
            "dm_fail_status": self.dm_fail_status,
            "dm_fail_ratio": self.dm_fail_ratio,
            "dm_fail_for_seconds": _remaining(self.dm_fail_until, now),
            "dm_drop_next": self.dm_drop_next,
            "dm_drop_ratio": self.dm_drop_ratio,
            "dm_rate_limit_next": self.dm_rate_limit_next,
            "dm_rate_limit_for_seconds": _remaining(self.dm_rate_limit_until, now),
            "dm_rate_limit_reset_in": self.dm_rate_limit_reset_in,
            "dm_budget_limit": self.dm_budget_limit,
            "dm_budget_window": self.dm_budget_window,
            "forbidden_recipients": sorted(self.forbidden_recipients),
            "automated_recipients": sorted(self.automated_recipients),
            "forbidden_codes": dict(sorted(self.forbidden_codes.items())),
            "xchat_delay_seconds": self.xchat_delay_seconds,
            "xchat_fail_next": self.xchat_fail_next,
            "xchat_fail_status": self.xchat_fail_status,
            "xchat_fail_for_seconds": _remaining(self.xchat_fail_until, now),
            "xchat_drop_next": self.xchat_drop_next,
            "xchat_rate_limit_next": self.xchat_rate_limit_next,
            "xchat_rate_limit_for_seconds": _remaining(self.xchat_rate_limit_until, now),
            "xchat_rate_limit_reset_in": self.xchat_rate_limit_reset_in,
            "xchat_budget_limit": self.xchat_budget_limit,
            "xchat_budget_window": self.xchat_budget_window,
            "xchat_forbidden_recipients": sorted(self.xchat_forbidden_recipients),
            "post_fail_next": self.post_fail_next,
            "post_fail_status": self.post_fail_status,
            "post_rate_limit_next": self.post_rate_limit_next,
            "latency": dict(self.latency),
            "deliver_duplicates_ratio": self.deliver_duplicates_ratio,
            "reorder_window": self.reorder_window,
            "redelivery_delays": (
                None if self.redelivery_delays is None else list(self.redelivery_delays)
            ),
            "delivery_timeout": self.delivery_timeout,
            "crc_timeout": self.crc_timeout,
            "seed": self.seed,
        }

    # --- parsing -----------------------------------------------------------------------

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], base: Faults | None = None, now: float | None = None
    ) -> Faults:
        """Parse a control request over `base` (default: no faults); ValueError names the field.

        Fields absent from `data` keep `base`'s value, counters and deadlines included.
        """
        unknown = sorted(set(data) - set(_PARSERS))
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        faults = copy.copy(base) if base is not None else cls()
        if base is not None:
            # Fresh containers: the base may still be in use by requests in flight.
            faults.forbidden_codes = dict(base.forbidden_codes)
            faults.latency = dict(base.latency)
        now = time.time() if now is None else now
        for name, value in data.items():
            _PARSERS[name](faults, name, value, now)
        if "seed" in data:
            faults.rng = random.Random(faults.seed)
        return faults


def _remaining(until: float | None, now: float) -> float:
    return 0.0 if until is None else round(max(0.0, until - now), 3)


def _latency_key_matches(key: str, method: str, path: str, canonical: str | None, cls: str) -> bool:
    if key == "*":
        return cls != "control"
    if key in ROUTE_CLASSES:
        return key == cls
    wanted_method, _, pattern = key.rpartition(" ")
    if wanted_method and wanted_method.upper() != method.upper():
        return False
    return pattern == canonical or fnmatch.fnmatchcase(path, pattern)


# --- field parsers -----------------------------------------------------------------------

Parser = Callable[[Faults, str, Any, float], None]


def _number(name: str, value: Any, *, maximum: float = _MAX_SECONDS) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= maximum):
        raise ValueError(f"{name} must be between 0 and {maximum:g}")
    return number


def _count(name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _ratio(name: str, value: Any) -> float:
    return _number(name, value, maximum=1.0)


def _user_ids(name: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(r, str | int) and not isinstance(r, bool) for r in value
    ):
        raise ValueError(f"{name} must be a list of user ids")
    return frozenset(str(r) for r in value)


def _set_number(faults: Faults, name: str, value: Any, now: float) -> None:
    setattr(faults, name, _number(name, value))


def _set_count(faults: Faults, name: str, value: Any, now: float) -> None:
    setattr(faults, name, _count(name, value))


def _set_ratio(faults: Faults, name: str, value: Any, now: float) -> None:
    setattr(faults, name, _ratio(name, value))


def _set_optional_positive(faults: Faults, name: str, value: Any, now: float) -> None:
    if value is None:
        setattr(faults, name, None)
        return
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be more than 0 (or null for the configured value)")
    setattr(faults, name, number)


def _set_fail_status(faults: Faults, name: str, value: Any, now: float) -> None:
    if type(value) is not int or not 400 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP error status (400-599)")
    setattr(faults, name, value)


def _until_attribute(name: str) -> str:
    """`dm_fail_for_seconds` is kept as `dm_fail_until`, and so on."""
    return name.removesuffix("_for_seconds") + "_until"


def _set_fail_for(faults: Faults, name: str, value: Any, now: float) -> None:
    seconds = _number(name, value)
    setattr(faults, _until_attribute(name), now + seconds if seconds > 0 else None)


def _set_rate_limit_for(faults: Faults, name: str, value: Any, now: float) -> None:
    seconds = _number(name, value)
    # A whole second, as X's x-rate-limit-reset header says it: the window really ends then.
    until = float(math.ceil(now + seconds)) if seconds > 0 else None
    setattr(faults, _until_attribute(name), until)


def _set_reset_in(faults: Faults, name: str, value: Any, now: float) -> None:
    setattr(faults, name, None if value is None else _number(name, value))


def _set_budget_limit(faults: Faults, name: str, value: Any, now: float) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{name} must be a whole number of at least 1 (or null)")
    setattr(faults, name, value)


def _set_user_ids(faults: Faults, name: str, value: Any, now: float) -> None:
    setattr(faults, name, _user_ids(name, value))


def _set_forbidden_codes(faults: Faults, name: str, value: Any, now: float) -> None:
    allowed = ", ".join(str(c) for c in sorted(PERMANENT_DM_CODES))
    if not isinstance(value, dict):
        raise ValueError(f"forbidden_codes must map user ids to one of {allowed}")
    codes: dict[str, int] = {}
    for user, code in value.items():
        if not (isinstance(user, str) and user.isdigit()) or code not in PERMANENT_DM_CODES:
            raise ValueError(f"forbidden_codes must map user ids to one of {allowed}")
        codes[user] = int(code)
    faults.forbidden_codes = codes


def _set_latency(faults: Faults, name: str, value: Any, now: float) -> None:
    if not isinstance(value, dict) or len(value) > _MAX_LATENCY_KEYS:
        raise ValueError(
            f"latency must map up to {_MAX_LATENCY_KEYS} route keys ('dm', 'xchat', 'tweets', "
            "'webhooks', 'auth', '*', a path pattern or 'METHOD pattern') to seconds"
        )
    latency: dict[str, float] = {}
    for key, seconds in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise ValueError("latency keys must be strings of 1 to 200 characters")
        if key not in ("*", *ROUTE_CLASSES) and "/" not in key:
            raise ValueError(
                f"latency key {key!r}: use 'dm', 'xchat', 'tweets', 'webhooks', 'auth', '*' or "
                "a path pattern"
            )
        latency[key] = _number(f"latency[{key!r}]", seconds)
    faults.latency = latency


def _set_delays(faults: Faults, name: str, value: Any, now: float) -> None:
    if value is None:
        faults.redelivery_delays = None
        return
    if not isinstance(value, list) or len(value) > 10:
        raise ValueError("redelivery_delays must be a list of up to 10 delays in seconds")
    faults.redelivery_delays = tuple(_number(name, v) for v in value)


def _set_seed(faults: Faults, name: str, value: Any, now: float) -> None:
    if value is not None and type(value) is not int:
        raise ValueError("seed must be an integer (or null)")
    faults.seed = value


_PARSERS: dict[str, Parser] = {
    "dm_delay_seconds": _set_number,
    "dm_fail_next": _set_count,
    "dm_fail_status": _set_fail_status,
    "dm_fail_ratio": _set_ratio,
    "dm_fail_for_seconds": _set_fail_for,
    "dm_drop_next": _set_count,
    "dm_drop_ratio": _set_ratio,
    "dm_rate_limit_next": _set_count,
    "dm_rate_limit_for_seconds": _set_rate_limit_for,
    "dm_rate_limit_reset_in": _set_reset_in,
    "dm_budget_limit": _set_budget_limit,
    "dm_budget_window": _set_optional_positive,
    "forbidden_recipients": _set_user_ids,
    "automated_recipients": _set_user_ids,
    "forbidden_codes": _set_forbidden_codes,
    "xchat_delay_seconds": _set_number,
    "xchat_fail_next": _set_count,
    "xchat_fail_status": _set_fail_status,
    "xchat_fail_for_seconds": _set_fail_for,
    "xchat_drop_next": _set_count,
    "xchat_rate_limit_next": _set_count,
    "xchat_rate_limit_for_seconds": _set_rate_limit_for,
    "xchat_rate_limit_reset_in": _set_reset_in,
    "xchat_budget_limit": _set_budget_limit,
    "xchat_budget_window": _set_optional_positive,
    "xchat_forbidden_recipients": _set_user_ids,
    "post_fail_next": _set_count,
    "post_fail_status": _set_fail_status,
    "post_rate_limit_next": _set_count,
    "latency": _set_latency,
    "deliver_duplicates_ratio": _set_ratio,
    "reorder_window": _set_number,
    "redelivery_delays": _set_delays,
    "delivery_timeout": _set_optional_positive,
    "crc_timeout": _set_optional_positive,
    "seed": _set_seed,
}
