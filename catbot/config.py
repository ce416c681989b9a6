"""Configuration: one pydantic-settings `Settings`, read from the environment and `.env`.

Every variable is `CATBOT_<FIELD>`; the four OAuth credentials are also read under the
lower-case names the original bot used (`consumer_key`, ...). A bad or missing value becomes
one `ConfigError` whose message names each offending variable, never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from catbot.urls import https_unless_loopback

if TYPE_CHECKING:
    from catbot.x.dm import Credentials
    from catbot.xchat.identity import BotIdentity

XApi = Literal["v2", "activity", "v1.1"]

PUBLIC_API_BASES: dict[str, str] = {
    "v2": "https://api.x.com",
    "activity": "https://api.x.com",
    "v1.1": "https://api.twitter.com",
}

ENV_PREFIX = "CATBOT_"


class ConfigError(Exception):
    """Start-up configuration is unusable; the message names each bad variable."""


def _cred(name: str, seed_name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name, seed_name))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    # X credentials (OAuth 1.0a user context of the bot account).
    x_consumer_key: SecretStr | None = _cred("CATBOT_X_CONSUMER_KEY", "consumer_key")
    x_consumer_secret: SecretStr | None = _cred("CATBOT_X_CONSUMER_SECRET", "consumer_secret")
    x_access_token: SecretStr | None = _cred("CATBOT_X_ACCESS_TOKEN", "access_token")
    x_access_token_secret: SecretStr | None = _cred(
        "CATBOT_X_ACCESS_TOKEN_SECRET", "access_token_secret"
    )
    x_bearer_token: SecretStr | None = None
    x_consumer_secret_previous: SecretStr | None = None
    x_api: XApi = "v2"
    x_env_name: str | None = None
    x_api_base: str | None = None
    # The webhook's public URL, when known: doctor checks it, the daemon watches its validity.
    public_url: str | None = None
    webhook_check_seconds: float = Field(default=900.0, gt=0)

    # Listeners.
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    webhook_path: str = "/webhook/twitter"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    # A connection that has not sent a whole request for this long is closed: silent
    # connections and trickled headers (slow-loris) cannot pile up.
    idle_timeout_seconds: float = Field(default=15.0, gt=0)

    # Storage and workers.
    store_url: str = "sqlite:///./catbot.db"
    workers: int = Field(default=4, ge=1, le=256)
    lease_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    max_event_age_seconds: float = Field(default=3600.0, gt=0)
    # Events stamped further ahead of this host's clock are refused ("future"): the age
    # check could not bound them.
    max_future_skew_seconds: float = Field(default=300.0, ge=0)
    # A store that hangs must not hang X's request: past this the webhook answers 503.
    store_timeout_seconds: float = Field(default=5.0, gt=0)

    # Sending to X.
    send_timeout_seconds: float = Field(default=10.0, gt=0)
    send_max_attempts: int = Field(default=5, ge=1)
    retry_initial_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    rate_limit_default_wait_seconds: float = Field(default=60.0, gt=0)
    # Our own budgets per endpoint family, the more generous documented figures (X answers
    # 429 anyway). DMs: 200/15 min per user (developer.x.com v2 reference for
    # POST /2/dm_conversations/.../messages; docs.x.com/x-api/fundamentals/rate-limits now
    # says 15/15 min) and 1,000/24 h per user (v1.1 direct_messages/events/new page;
    # docs.x.com: 1,440/24 h). Posts (POST /2/tweets): 100/15 min per user and 10,000/24 h
    # per app, docs.x.com/x-api/fundamentals/rate-limits ("Manage posts").
    dm_budget_15min: int = Field(default=200, ge=1)
    dm_budget_24h: int = Field(default=1000, ge=1)
    post_budget_15min: int = Field(default=100, ge=1)
    post_budget_24h: int = Field(default=10_000, ge=1)
    # X Chat sends (POST /2/chat/conversations/{id}/messages): docs.x.com's send-chat-message
    # page names no figure, so the DM ones until it does; a 429 still closes the gate.
    xchat_budget_15min: int = Field(default=200, ge=1)
    xchat_budget_24h: int = Field(default=1000, ge=1)

    # X Chat (end-to-end encrypted DMs, docs/xchat.md): the bot's private key blob from
    # `catbot xchat keygen` and the version X gave it at `catbot xchat register`. Both or
    # neither: without them `chat.*` events are only counted.
    xchat_private_key: SecretStr | None = None
    xchat_key_version: str | None = None

    # What the bot says.
    cooldown_seconds: float = Field(default=10.0, ge=0)
    # Answer public posts that mention the bot with a public reply (same rules as DMs).
    reply_to_mentions: bool = False
    daily_cap: int = Field(default=50, ge=1)
    trigger: str | None = None
    reply_suffix: str = ""
    # auto: answer in the language of each message; en or zh: always that language.
    language: Literal["auto", "en", "zh"] = "auto"
    facts_url: str | None = None
    facts_timeout_seconds: float = Field(default=2.0, gt=0)
    facts_cache_seconds: float = Field(default=300.0, ge=0)

    # Operations.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("*", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # An empty key is a valid HMAC key that everyone has: a blanked variable (or an
        # unset ${VAR} in a template) must mean "not set", never "sign with nothing".
        if isinstance(value, str) and not value.strip() and info.field_name in secret_fields():
            return None
        return value

    @field_validator("xchat_key_version", mode="before")
    @classmethod
    def _blank_version_is_unset(cls, value: Any) -> Any:
        # Paired with a secret that is unset when blank: a blank version must be too, or
        # "both or neither" would complain about a variable left empty on purpose.
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("webhook_path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("must be an absolute URL path such as /webhook/twitter")
        return value

    @field_validator("trigger")
    @classmethod
    def _trigger_compiles(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value or None

    @field_validator("x_api_base", "facts_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("facts_url")
    @classmethod
    def _facts_url_https(cls, value: str | None) -> str | None:
        # Whoever can rewrite a plain-http answer chooses what the bot DMs to people.
        problem = https_unless_loopback(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("must start with sqlite:/// or redis://")
        return value

    @field_validator("x_env_name")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError("may hold only letters, digits, '-' and '_'")
        return value or None

    # Derived values -------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """Where the X API is: the override, else the public base of the flavour."""
        return self.x_api_base or PUBLIC_API_BASES[self.x_api]

    @property
    def bot_user_id(self) -> str | None:
        """The bot account's id: X access tokens have the form `<user id>-<random>`."""
        if self.x_access_token is None:
            return None
        match = re.fullmatch(r"([0-9]{1,19})-.+", self.x_access_token.get_secret_value())
        return match.group(1) if match else None

    @property
    def sqlite_path(self) -> Path | None:
        if self.store_url.startswith("sqlite:///"):
            return Path(self.store_url.removeprefix("sqlite:///"))
        return None

    @property
    def xchat_enabled(self) -> bool:
        """Whether the daemon answers X Chat: both X Chat settings are set (whether they are
        usable is `xchat_identity`'s business, run at start-up)."""
        return self.xchat_private_key is not None and self.xchat_key_version is not None

    def xchat_identity(self) -> BotIdentity | None:
        """The bot's X Chat identity, or None when X Chat is off. A half-configured or
        unusable key is a `ConfigError` naming the variable, never echoing the key."""
        from catbot.xchat.errors import IdentityError
        from catbot.xchat.identity import load_identity

        key, version = self.xchat_private_key, self.xchat_key_version
        if key is None and version is None:
            return None
        problems = [
            f"  {env_name(field)}: missing (X Chat needs {env_name('xchat_private_key')} and "
            f"{env_name('xchat_key_version')} together)"
            for field, value in (("xchat_private_key", key), ("xchat_key_version", version))
            if value is None
        ]
        user_id = self.bot_user_id
        if not problems and user_id is None:
            problems.append(f"  {env_name('x_access_token')}: X Chat needs the bot's user id, "
                            "the digits before '-' in the access token")
        if not problems:
            assert key is not None and user_id is not None
            try:
                return load_identity(key.get_secret_value(), user_id=user_id,
                                     key_version=version)
            except IdentityError as exc:
                # The message names the setting and never repeats its value.
                problems.append(f"  {exc}")
        raise ConfigError("catbot cannot start, X Chat is misconfigured:\n"
                          + "\n".join(problems))

    def signing_secrets(self) -> list[str]:
        """Secrets whose signatures are accepted: current first, then the rotated-out one."""
        secrets = [s.get_secret_value() for s in (self.x_consumer_secret,) if s is not None]
        if self.x_consumer_secret_previous is not None:
            secrets.append(self.x_consumer_secret_previous.get_secret_value())
        return secrets

    def require_credentials(self) -> None:
        """Fail with one message naming every missing credential (needed by run/dev)."""
        missing = [
            env_name(field)
            for field in (
                "x_consumer_key",
                "x_consumer_secret",
                "x_access_token",
                "x_access_token_secret",
            )
            if not _filled(getattr(self, field))
        ]
        if self.x_api == "v1.1" and not self.x_env_name:
            missing.append(env_name("x_env_name") + " (required when CATBOT_X_API=v1.1)")
        if missing:
            raise ConfigError(
                "catbot cannot start, configuration is incomplete:\n"
                + "\n".join(f"  {name}: missing" for name in missing)
            )


def credentials_from(settings: Settings) -> Credentials:
    """The bot's OAuth 1.0a credentials for the X clients; a `ConfigError` naming each
    missing variable when one is missing."""
    # Imported here, as in `Settings.xchat_identity`: the X clients build on this module.
    from catbot.x.dm import Credentials

    settings.require_credentials()

    def value(secret: SecretStr | None) -> str:
        assert secret is not None  # require_credentials
        return secret.get_secret_value()

    return Credentials(
        consumer_key=value(settings.x_consumer_key),
        consumer_secret=value(settings.x_consumer_secret),
        access_token=value(settings.x_access_token),
        access_token_secret=value(settings.x_access_token_secret),
        bearer_token=value(settings.x_bearer_token) if settings.x_bearer_token else None,
    )


def secret_fields() -> frozenset[str]:
    """The settings that hold secrets (typed `SecretStr`): never logged or echoed, and an
    empty or whitespace-only value is the same as not setting them."""
    return frozenset(
        name for name, info in Settings.model_fields.items()
        if info.annotation is SecretStr or SecretStr in get_args(info.annotation)
    )


def redact_url(url: str) -> str:
    """`url` fit to print: a user name or password before '@' becomes `***`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _filled(value: SecretStr | None) -> bool:
    return value is not None and value.get_secret_value().strip() != ""


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return ENV_PREFIX + field.upper()


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings; turn validation errors into one readable `ConfigError`."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        name = variable_for(loc[0]) if loc else "?"
        raw = error.get("input")
        secret = any(word in name.lower() for word in ("secret", "token", "key"))
        hide = secret or raw is None or isinstance(raw, dict)
        # URLs may carry a password before '@': never echo it.
        shown = "" if hide else f" (got {re.sub(r'[^/@]*@', '***@', str(raw))[:60]!r})"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"  {name}: {message}{shown}")
    return "catbot cannot start, configuration is invalid:\n" + "\n".join(lines)


def variable_for(key: str) -> str:
    """The variable a user set for a pydantic error location (a field name or an alias)."""
    for field, info in Settings.model_fields.items():
        choices = info.validation_alias
        names = [str(c) for c in choices.choices] if isinstance(choices, AliasChoices) else []
        if key == field or key.lower() in (n.lower() for n in names):
            return names[0] if names else env_name(field)
    return key.upper()
