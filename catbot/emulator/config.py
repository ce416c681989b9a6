"""Emulator settings: credentials from the daemon's environment variables, the rest from flags.

The emulator reads the same `CATBOT_X_*` variables as the daemon (and the seed's lower-case
names) so that one environment drives both ends of the loop and they agree on the secrets.
When none is set it uses built-in demo credentials. It never reads `./.env` by itself: that
is the file operators fill with production credentials, and an emulator signing with the
production consumer secret would make deliveries the real daemon accepts. `--env-file PATH`
reads a file on purpose.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast, get_args

from catbot.emulator.state.registry import BOT_ACTIVITY_EVENT_TYPES
from catbot.emulator.state.spreading import DELIVERY_MODES, DeliveryMode
from catbot.emulator.urls import is_loopback_host, webhook_url_problem

ApiFlavour = Literal["v2", "activity", "v1.1"]
API_FLAVOURS: tuple[str, ...] = get_args(ApiFlavour)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099
DEFAULT_BOT_USER_ID = "1000"

# Public, and useful only against this emulator (the same values as `catbot demo`'s). The
# access token gets the bot's id in front, as X's tokens have it.
BUILT_IN_CREDENTIALS: dict[str, str] = {
    "consumer_key": "demo-consumer-key",
    "consumer_secret": "demo-consumer-secret-for-offline-use-only",
    "access_token": "demo-access-token",
    "access_token_secret": "demo-access-token-secret",
}
BUILT_IN_SOURCE = "built-in demo credentials"

USER_ID_RE = re.compile(r"^[0-9]{1,19}$")
# v1.1 premium environment labels, as X's dev-environment form allows them.
ENV_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# X access tokens look like "<user id>-<random>"; the prefix names the account.
_ACCESS_TOKEN_RE = re.compile(r"^([0-9]{1,19})-.+$")

# Field name -> variables to read, first non-empty wins (the daemon's order).
CREDENTIAL_VARIABLES: dict[str, tuple[str, ...]] = {
    "consumer_key": ("CATBOT_X_CONSUMER_KEY", "consumer_key"),
    "consumer_secret": ("CATBOT_X_CONSUMER_SECRET", "consumer_secret"),
    "access_token": ("CATBOT_X_ACCESS_TOKEN", "access_token"),
    "access_token_secret": ("CATBOT_X_ACCESS_TOKEN_SECRET", "access_token_secret"),
    "bearer_token": ("CATBOT_X_BEARER_TOKEN",),
}
API_VARIABLE = "CATBOT_X_API"
ENV_NAME_VARIABLE = "CATBOT_X_ENV_NAME"


class ConfigError(ValueError):
    """The emulator cannot start with these settings; the message says which and why."""


@dataclass(frozen=True)
class EmulatorConfig:
    # Secrets stay out of repr so that a logged config never leaks them.
    consumer_secret: str = field(repr=False)
    consumer_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_secret: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Listening beyond loopback opens the unauthenticated control API: only when asked for.
    allow_remote: bool = False
    # Where the credentials came from, for the start-up line (never the values).
    credentials_source: str = "the settings given"
    api: ApiFlavour = "v2"
    webhook_urls: tuple[str, ...] = ()
    bot_user_id: str = DEFAULT_BOT_USER_ID
    bot_screen_name: str = "catbot"
    bot_name: str = "catbot"
    # X stamps the bot's own sent DMs with the id of the app that sent them.
    app_id: str = "3033300"
    app_name: str = "catbot"
    activity_tag: str = "catbot"

    dm_rate_limit: int = 200
    dm_rate_window: float = 900.0
    max_text_length: int = 10_000
    max_clock_skew: float = 300.0

    crc_timeout: float = 3.0
    crc_retry_interval: float = 0.5
    crc_retry_total: float = 60.0
    # X re-checks registered webhooks periodically (hourly for v2); a failure invalidates.
    crc_interval: float = 3600.0
    # A delivery without an answer within this long failed (X gives up on it and may retry).
    delivery_timeout: float = 10.0
    # X retries failed deliveries on paid tiers; empty: no redelivery (the free tiers).
    redelivery_delays: tuple[float, ...] = ()
    # "round_robin": each delivery to one webhook in turn (a load balancer before replicas).
    delivery_mode: DeliveryMode = "all"
    duplicate_every: int = 0

    # Tier limits (pay-per-use: 1 webhook, 3 subscriptions). Webhooks count per app across
    # every flavour's registration route; subscriptions count per kind (Account Activity
    # user subscriptions, X Activity API subscriptions), each against the same limit.
    max_webhooks: int = 1
    max_subscriptions: int = 3
    # v1.1 premium environment labels the app has; empty allows any [A-Za-z0-9_-]+.
    env_names: tuple[str, ...] = ()
    # CATBOT_X_ENV_NAME: always allowed, and the label of start-up webhooks with --api v1.1.
    default_env_name: str | None = None
    # Per-app budgets of the management routes, per 15-minute window (x-api.md).
    webhook_rate_limit: int = 450
    subscription_rate_limit: int = 500
    management_rate_window: float = 900.0

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> Iterable[str]:
        if not self.consumer_secret:
            yield "CATBOT_X_CONSUMER_SECRET is required (it keys CRC answers and signatures)"
        if self.api not in API_FLAVOURS:
            yield f"api must be one of {', '.join(API_FLAVOURS)}, not {self.api!r}"
        if not 0 <= self.port <= 65535:
            yield f"port must be between 0 and 65535, not {self.port}"
        if not self.allow_remote and not is_loopback_host(self.host.strip("[]")):
            yield (
                f"--host {self.host or repr('')} is not a loopback address: the control API has "
                "no authentication and signs whatever it delivers with the consumer secret, "
                "so anyone who can reach it could forge deliveries. Listen on 127.0.0.1, or "
                "pass --allow-remote to listen there anyway"
            )
        if not USER_ID_RE.match(self.bot_user_id):
            yield f"bot user id must be 1 to 19 digits, not {self.bot_user_id!r}"
        for url in self.webhook_urls:
            problem = webhook_url_problem(url)
            if problem:
                yield f"--webhook-url {url}: {problem}"
        yield from self._limit_problems()
        extra = (self.default_env_name,) if self.default_env_name is not None else ()
        for name in (*self.env_names, *extra):
            if not ENV_NAME_RE.match(name):
                yield f"environment name {name!r} must match [A-Za-z0-9_-]+"
        if self.dm_rate_limit < 1:
            yield "dm rate limit must be at least 1"
        for name in (
            "dm_rate_window",
            "crc_timeout",
            "crc_retry_interval",
            "crc_interval",
            "delivery_timeout",
            "max_clock_skew",
            "management_rate_window",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                yield f"{name.replace('_', ' ')} must be a positive number of seconds"
        if not (math.isfinite(self.crc_retry_total) and self.crc_retry_total >= 0):
            yield "crc retry total must be zero or more seconds"
        yield from self._delivery_problems()

    def _delivery_problems(self) -> Iterable[str]:
        if self.delivery_mode not in DELIVERY_MODES:
            yield f"delivery mode must be one of {', '.join(DELIVERY_MODES)}"
        if type(self.duplicate_every) is not int or self.duplicate_every < 0:
            yield "duplicate every must be a whole number, 0 for never"
        if len(self.redelivery_delays) > 10 or not all(
            isinstance(d, int | float) and math.isfinite(d) and 0 <= d <= 3600
            for d in self.redelivery_delays
        ):
            yield "redelivery delays must be up to 10 numbers of seconds between 0 and 3600"

    def _limit_problems(self) -> Iterable[str]:
        for name in (
            "max_webhooks",
            "max_subscriptions",
            "webhook_rate_limit",
            "subscription_rate_limit",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                yield f"{name.replace('_', ' ')} must be a whole number of at least 1"
                return
        # Start-up webhooks are registered through the same tier rules as X's routes, so a
        # configuration that X itself would refuse fails here, before anything listens.
        hooks = len(set(self.webhook_urls))
        if self.spread_startup_webhooks:
            # Replicas behind one load balancer: X would see a single webhook.
            hooks = min(hooks, 1)
        if hooks > self.max_webhooks:
            yield (
                f"{hooks} --webhook-url given but the tier allows {self.max_webhooks} "
                "webhook(s); raise --max-webhooks"
            )
        # activity: dm.received, post.mention.create and post.reply.create
        per_hook = len(BOT_ACTIVITY_EVENT_TYPES) if self.api == "activity" else 1
        if hooks * per_hook > self.max_subscriptions:
            yield (
                f"start-up webhooks need {hooks * per_hook} subscriptions but the tier "
                f"allows {self.max_subscriptions}; raise --max-subscriptions"
            )

    @property
    def spread_startup_webhooks(self) -> bool:
        """Several start-up webhooks in round-robin mode stand for replicas behind one load
        balancer, which X sees as one webhook: the tier limits do not count them apart."""
        return self.delivery_mode == "round_robin"

    def env_allowed(self, name: str) -> bool:
        if not ENV_NAME_RE.match(name):
            return False
        if name == self.default_env_name or not self.env_names:
            return True
        return name in self.env_names

    @property
    def startup_env_name(self) -> str | None:
        """The v1.1 environment start-up webhooks belong to (None outside v1.1 mode)."""
        if self.api != "v1.1":
            return None
        return self.default_env_name or (self.env_names[0] if self.env_names else None)

    @property
    def app_bearer_token(self) -> str:
        """The app-only token X would issue: the configured one, else one derived from the key.

        Derived deterministically so that `POST /oauth2/token` always hands out the same
        token and a restarted emulator still accepts it.
        """
        if self.bearer_token:
            return self.bearer_token
        digest = hashlib.sha256((self.consumer_key or "").encode()).hexdigest()
        return "AAAA" + digest[:40]

    def credentials_summary(self) -> str:
        """Which credentials are in use and where they came from, never a secret."""
        key = (
            f"consumer key {abbreviate(self.consumer_key)}"
            if self.consumer_key
            else ("no consumer key")
        )
        if self.credentials_source == BUILT_IN_SOURCE:
            return (
                f"{BUILT_IN_SOURCE} ({key}); set CATBOT_X_* or pass --env-file to play X "
                "for your app"
            )
        return f"{key}, from {self.credentials_source}"


def abbreviate(value: str) -> str:
    """Enough of an identifier to recognise it (`test-…`), too little to use it."""
    return value[: min(5, len(value) // 3)] + "…"


def bot_user_id_from_token(access_token: str | None) -> str | None:
    if access_token is None:
        return None
    match = _ACCESS_TOKEN_RE.match(access_token)
    return match.group(1) if match else None


def _first(env: Mapping[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def config_from_env(env: Mapping[str, str], **cli_overrides: Any) -> EmulatorConfig:
    """Build the config from environment variables, then command-line values.

    Overrides that are None count as "not given", so argparse defaults of None fall through
    to the environment or the dataclass default.
    """
    known = {f.name for f in fields(EmulatorConfig)}
    unknown = sorted(set(cli_overrides) - known)
    if unknown:
        raise TypeError(f"unknown emulator settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, variables in CREDENTIAL_VARIABLES.items():
        value = _first(env, variables)
        if value is not None:
            values[name] = value
    built_in = not values
    if built_in:
        # Nothing given at all: the emulator's own. (Some given: the user meant their app,
        # and a missing secret is an error below rather than a silent mix.)
        bot = cli_overrides.get("bot_user_id") or DEFAULT_BOT_USER_ID
        values = dict(BUILT_IN_CREDENTIALS)
        values["access_token"] = f"{bot}-{BUILT_IN_CREDENTIALS['access_token']}"
    if "consumer_secret" not in values:
        raise ConfigError(
            "CATBOT_X_CONSUMER_SECRET is required (the app's consumer secret keys the CRC "
            "answers and the delivery signatures); set it or consumer_secret"
        )
    api = env.get(API_VARIABLE)
    if api:
        if api not in API_FLAVOURS:
            raise ConfigError(f"{API_VARIABLE} must be one of {', '.join(API_FLAVOURS)}")
        values["api"] = api
    env_name = env.get(ENV_NAME_VARIABLE)
    if env_name:
        values["default_env_name"] = env_name
    values.update({k: v for k, v in cli_overrides.items() if v is not None})
    if built_in:
        values["credentials_source"] = BUILT_IN_SOURCE
    delays = values.get("redelivery_delays")
    if isinstance(delays, str):
        values["redelivery_delays"] = parse_delays(delays)
    elif delays is not None:
        values["redelivery_delays"] = tuple(cast(Iterable[float], delays))
    for name in ("webhook_urls", "env_names"):
        items = values.get(name)
        if isinstance(items, str):
            values[name] = (items,)
        elif items is not None:
            # The same URL twice is one webhook, as registering it again would be refused.
            values[name] = tuple(dict.fromkeys(cast(Iterable[str], items)))
    # The token names the account it belongs to; a flag cannot make it someone else.
    token_user = bot_user_id_from_token(values.get("access_token"))
    if token_user is not None:
        values["bot_user_id"] = token_user
    return EmulatorConfig(**values)


def parse_delays(text: str) -> tuple[float, ...]:
    """Parse "0.2,0.5,1" into (0.2, 0.5, 1.0); "" is () (no redelivery)."""
    if not text.strip():
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"redelivery delays must be comma-separated seconds, like 0.2,0.5,1; not {text!r}"
        ) from None


def read_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines the way the daemon's `.env` support does, minus interpolation."""
    result: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key.strip()] = value
    return result
