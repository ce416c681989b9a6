"""Settings from the environment and `.env`: defaults, seed names, errors that name variables."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from catbot.config import (
    PUBLIC_API_BASES,
    ConfigError,
    Settings,
    env_name,
    load_settings,
    redact_url,
    secret_fields,
    variable_for,
)

SEED_NAMES = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
CREDENTIAL_VARS = (
    "CATBOT_X_CONSUMER_KEY",
    "CATBOT_X_CONSUMER_SECRET",
    "CATBOT_X_ACCESS_TOKEN",
    "CATBOT_X_ACCESS_TOKEN_SECRET",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CATBOT_* or seed variable leaks in from the machine, and no stray `.env`."""
    for name in list(os.environ):
        if name.upper().startswith("CATBOT_") or name.lower() in SEED_NAMES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def full_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CATBOT_X_CONSUMER_KEY": "ck-value-1",
        "CATBOT_X_CONSUMER_SECRET": "cs-value-2",
        "CATBOT_X_ACCESS_TOKEN": "4242-at-value-3",
        "CATBOT_X_ACCESS_TOKEN_SECRET": "ats-value-4",
    }
    set_env(monkeypatch, **values)
    return values


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **overrides)
    return str(info.value)


# Defaults ---------------------------------------------------------------------------------


def test_defaults_follow_design_table() -> None:
    settings = load_settings(None)
    assert settings.x_api == "v2"
    assert settings.x_env_name is None
    assert settings.x_api_base is None
    assert settings.api_base == "https://api.x.com"
    assert settings.x_consumer_secret_previous is None
    assert settings.x_bearer_token is None
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.webhook_path == "/webhook/twitter"
    assert settings.metrics_port == 9090
    assert settings.store_url == "sqlite:///./catbot.db"
    assert settings.sqlite_path == Path("./catbot.db")
    assert settings.log_format == "json"
    assert settings.max_body_bytes == 1024 * 1024
    for field in ("x_consumer_key", "x_consumer_secret", "x_access_token",
                  "x_access_token_secret"):
        assert getattr(settings, field) is None
    assert settings.bot_user_id is None
    assert settings.signing_secrets() == []
    assert settings.trigger is None


def test_env_name_helper() -> None:
    assert env_name("port") == "CATBOT_PORT"
    assert env_name("x_consumer_secret") == "CATBOT_X_CONSUMER_SECRET"


# Reading the environment ------------------------------------------------------------------


def test_catbot_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        CATBOT_HOST="127.0.0.1",
        CATBOT_PORT="8443",
        CATBOT_WEBHOOK_PATH="/hooks/x",
        CATBOT_METRICS_PORT="9191",
        CATBOT_STORE_URL="redis://localhost:6379/0",
        CATBOT_LOG_FORMAT="text",
        CATBOT_X_API="activity",
        CATBOT_X_BEARER_TOKEN="bearer-xyz",
        CATBOT_TRIGGER="cat facts",
    )
    settings = load_settings(None)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8443
    assert settings.webhook_path == "/hooks/x"
    assert settings.metrics_port == 9191
    assert settings.store_url == "redis://localhost:6379/0"
    assert settings.sqlite_path is None
    assert settings.log_format == "text"
    assert settings.x_api == "activity"
    assert settings.x_bearer_token is not None
    assert settings.x_bearer_token.get_secret_value() == "bearer-xyz"
    assert settings.trigger == "cat facts"


def test_credentials_from_catbot_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    values = full_credentials(monkeypatch)
    settings = load_settings(None)
    assert settings.x_consumer_key.get_secret_value() == values["CATBOT_X_CONSUMER_KEY"]
    assert settings.x_consumer_secret.get_secret_value() == values["CATBOT_X_CONSUMER_SECRET"]
    assert settings.x_access_token.get_secret_value() == values["CATBOT_X_ACCESS_TOKEN"]
    assert (
        settings.x_access_token_secret.get_secret_value()
        == values["CATBOT_X_ACCESS_TOKEN_SECRET"]
    )
    settings.require_credentials()


def test_seed_lower_case_names_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        consumer_key="seed-ck",
        consumer_secret="seed-cs",
        access_token="77-seed-at",
        access_token_secret="seed-ats",
    )
    settings = load_settings(None)
    assert settings.x_consumer_key.get_secret_value() == "seed-ck"
    assert settings.x_consumer_secret.get_secret_value() == "seed-cs"
    assert settings.x_access_token.get_secret_value() == "77-seed-at"
    assert settings.x_access_token_secret.get_secret_value() == "seed-ats"
    assert settings.bot_user_id == "77"
    settings.require_credentials()


def test_catbot_name_wins_over_seed_name(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, consumer_secret="seed-cs", CATBOT_X_CONSUMER_SECRET="catbot-cs")
    settings = load_settings(None)
    assert settings.x_consumer_secret.get_secret_value() == "catbot-cs"


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "CATBOT_PORT=9000\n"
        "CATBOT_X_API=v1.1\n"
        "CATBOT_X_ENV_NAME=dev-env\n"
        "# a comment\n"
        "consumer_key=file-ck\n"
        "CATBOT_X_CONSUMER_SECRET=file-cs\n"
        "UNRELATED=whatever\n",
        encoding="utf-8",
    )
    settings = load_settings(env_file)
    assert settings.port == 9000
    assert settings.x_api == "v1.1"
    assert settings.x_env_name == "dev-env"
    assert settings.x_consumer_key.get_secret_value() == "file-ck"
    assert settings.x_consumer_secret.get_secret_value() == "file-cs"


def test_default_dot_env_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CATBOT_METRICS_PORT=9999\n", encoding="utf-8")
    assert load_settings().metrics_port == 9999
    assert load_settings(None).metrics_port == 9090


def test_environment_overrides_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("CATBOT_PORT=9000\n", encoding="utf-8")
    monkeypatch.setenv("CATBOT_PORT", "9001")
    assert load_settings(env_file).port == 9001


def test_missing_env_file_is_not_an_error(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "does-not-exist.env").port == 8080


def test_invalid_value_in_env_file_is_reported(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("CATBOT_PORT=eighty\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file)
    assert "CATBOT_PORT" in str(info.value)


# Invalid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CATBOT_PORT", "abc"),
        ("CATBOT_PORT", "70000"),
        ("CATBOT_PORT", "-1"),
        ("CATBOT_METRICS_PORT", "nine"),
        ("CATBOT_X_API", "v3"),
        ("CATBOT_X_API", "V2 "),
        ("CATBOT_TRIGGER", "(unclosed"),
        ("CATBOT_TRIGGER", "[a-"),
        ("CATBOT_STORE_URL", "postgres://db/catbot"),
        ("CATBOT_STORE_URL", "catbot.db"),
        ("CATBOT_WEBHOOK_PATH", "webhook/twitter"),
        ("CATBOT_WEBHOOK_PATH", "/webhook?x=1"),
        ("CATBOT_LOG_FORMAT", "xml"),
        ("CATBOT_X_API_BASE", "api.x.com"),
        ("CATBOT_X_API_BASE", "ftp://api.x.com"),
        ("CATBOT_X_ENV_NAME", "bad env!"),
        ("CATBOT_WORKERS", "0"),
        ("CATBOT_DAILY_CAP", "lots"),
        ("CATBOT_COOLDOWN_SECONDS", "-3"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = config_error()
    # Exactly the right variable is named, at the start of its own line.
    assert re.search(rf"^\s*{re.escape(variable)}:", message, re.MULTILINE), message
    assert message.count("\n") == 1, message  # header line plus one error line


def test_all_errors_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        CATBOT_PORT="abc",
        CATBOT_X_API="v3",
        CATBOT_TRIGGER="(",
        CATBOT_STORE_URL="mysql://x",
        CATBOT_WEBHOOK_PATH="webhook",
    )
    message = config_error()
    for variable in (
        "CATBOT_PORT",
        "CATBOT_X_API",
        "CATBOT_TRIGGER",
        "CATBOT_STORE_URL",
        "CATBOT_WEBHOOK_PATH",
    ):
        assert re.search(rf"^\s*{variable}:", message, re.MULTILINE), (variable, message)
    assert "Traceback" not in message


def test_config_error_has_no_chained_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATBOT_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_secret_values_never_in_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = full_credentials(monkeypatch)
    set_env(
        monkeypatch,
        CATBOT_X_BEARER_TOKEN="bearer-secret-5",
        CATBOT_X_CONSUMER_SECRET_PREVIOUS="previous-secret-6",
        CATBOT_PORT="abc",
        CATBOT_X_API="v3",
    )
    message = config_error()
    for value in [*secrets.values(), "bearer-secret-5", "previous-secret-6"]:
        assert value not in message


def test_secret_values_hidden_when_a_secret_itself_is_invalid() -> None:
    message = config_error(
        x_consumer_secret=12345678, x_access_token_secret=87654321, x_bearer_token=13572468
    )
    for variable in ("CATBOT_X_CONSUMER_SECRET", "CATBOT_X_ACCESS_TOKEN_SECRET",
                     "CATBOT_X_BEARER_TOKEN"):
        assert variable in message
    for value in ("12345678", "87654321", "13572468"):
        assert value not in message


def test_seed_name_error_names_a_real_variable() -> None:
    """An invalid value given under the seed's name must be reported under a variable that
    exists (`consumer_key` or `CATBOT_X_CONSUMER_KEY`), never an invented one."""
    message = config_error(consumer_key=12345)
    assert "CATBOT_CONSUMER_KEY" not in message, message
    assert "CATBOT_X_CONSUMER_KEY" in message or "CONSUMER_KEY:" in message
    assert "12345" not in message


def test_store_url_password_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis URL carries its password; a typo in the scheme must not print it."""
    monkeypatch.setenv("CATBOT_STORE_URL", "redis:/:hunter2-password@redis:6379/0")
    message = config_error()
    assert "CATBOT_STORE_URL" in message
    assert "hunter2-password" not in message, message


def test_non_secret_bad_value_is_echoed_for_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATBOT_PORT", "abc")
    assert "abc" in config_error()


# require_credentials ----------------------------------------------------------------------


def test_require_credentials_lists_every_missing_variable() -> None:
    settings = load_settings(None)
    with pytest.raises(ConfigError) as info:
        settings.require_credentials()
    message = str(info.value)
    for variable in CREDENTIAL_VARS:
        assert re.search(rf"^\s*{variable}: missing", message, re.MULTILINE), message


def test_require_credentials_lists_only_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, CATBOT_X_CONSUMER_KEY="ck", CATBOT_X_ACCESS_TOKEN="1-at")
    with pytest.raises(ConfigError) as info:
        load_settings(None).require_credentials()
    message = str(info.value)
    assert "CATBOT_X_CONSUMER_SECRET:" in message
    assert "CATBOT_X_ACCESS_TOKEN_SECRET:" in message
    assert "CATBOT_X_CONSUMER_KEY:" not in message
    assert "CATBOT_X_ACCESS_TOKEN:" not in message
    assert "1-at" not in message


def test_blank_credentials_count_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    full_credentials(monkeypatch)
    monkeypatch.setenv("CATBOT_X_CONSUMER_SECRET", "   ")
    with pytest.raises(ConfigError) as info:
        load_settings(None).require_credentials()
    assert "CATBOT_X_CONSUMER_SECRET" in str(info.value)
    assert "CATBOT_X_CONSUMER_KEY" not in str(info.value)


def test_v11_needs_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    full_credentials(monkeypatch)
    monkeypatch.setenv("CATBOT_X_API", "v1.1")
    with pytest.raises(ConfigError) as info:
        load_settings(None).require_credentials()
    assert "CATBOT_X_ENV_NAME" in str(info.value)
    monkeypatch.setenv("CATBOT_X_ENV_NAME", "production")
    load_settings(None).require_credentials()


@pytest.mark.parametrize("flavour", ["v2", "activity"])
def test_env_name_not_needed_for_v2_flavours(
    monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    full_credentials(monkeypatch)
    monkeypatch.setenv("CATBOT_X_API", flavour)
    load_settings(None).require_credentials()


# Derived values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("123-abc", "123"),
        ("1000-Zx9", "1000"),
        ("1234567890123456789-x", "1234567890123456789"),
        ("12345678901234567890-x", None),  # 20 digits: not a user id
        ("abc", None),
        ("123", None),
        ("123-", None),
        ("-abc", None),
        ("x123-abc", None),
    ],
)
def test_bot_user_id_from_access_token(
    monkeypatch: pytest.MonkeyPatch, token: str, expected: str | None
) -> None:
    monkeypatch.setenv("CATBOT_X_ACCESS_TOKEN", token)
    assert load_settings(None).bot_user_id == expected


def test_signing_secrets_current_then_previous(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        CATBOT_X_CONSUMER_SECRET="current-one",
        CATBOT_X_CONSUMER_SECRET_PREVIOUS="previous-one",
    )
    assert load_settings(None).signing_secrets() == ["current-one", "previous-one"]


def test_signing_secrets_current_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("consumer_secret", "seeded")
    assert load_settings(None).signing_secrets() == ["seeded"]


@pytest.mark.parametrize("flavour", ["v2", "activity", "v1.1"])
def test_api_base_defaults_per_flavour(monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    monkeypatch.setenv("CATBOT_X_API", flavour)
    assert load_settings(None).api_base == PUBLIC_API_BASES[flavour]


def test_public_bases_are_the_documented_hosts() -> None:
    assert PUBLIC_API_BASES == {
        "v2": "https://api.x.com",
        "activity": "https://api.x.com",
        "v1.1": "https://api.twitter.com",
    }


def test_api_base_override_wins_and_loses_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, CATBOT_X_API="v1.1", CATBOT_X_API_BASE="http://127.0.0.1:8099/")
    assert load_settings(None).api_base == "http://127.0.0.1:8099"


def test_empty_optional_strings_become_none(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, CATBOT_X_API_BASE="", CATBOT_TRIGGER="", CATBOT_X_ENV_NAME="")
    settings = load_settings(None)
    assert settings.x_api_base is None
    assert settings.trigger is None
    assert settings.x_env_name is None
    assert settings.api_base == "https://api.x.com"


def test_sqlite_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATBOT_STORE_URL", "sqlite:////var/lib/catbot/catbot.db")
    assert load_settings(None).sqlite_path == Path("/var/lib/catbot/catbot.db")


def test_overrides_by_field_name() -> None:
    settings = load_settings(None, port=1234, x_api="activity")
    assert settings.port == 1234
    assert settings.x_api == "activity"
    assert isinstance(settings, Settings)


def test_secrets_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    values = full_credentials(monkeypatch)
    text = repr(load_settings(None)) + str(load_settings(None))
    for value in values.values():
        assert value not in text


# Secrets: blank means unset (issue 15) ------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
BLANKS = ["", " ", "  \t "]


def test_the_credentials_are_secret_settings() -> None:
    fields = secret_fields()
    assert {"x_consumer_key", "x_consumer_secret", "x_access_token", "x_access_token_secret",
            "x_bearer_token", "x_consumer_secret_previous"} <= fields
    for field in fields:  # the type is what masks the value in repr and errors
        assert "SecretStr" in str(Settings.model_fields[field].annotation)


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("field", sorted(secret_fields()))
def test_a_blank_secret_is_unset(monkeypatch: pytest.MonkeyPatch, field: str, blank: str) -> None:
    monkeypatch.setenv(variable_for(field), blank)
    assert getattr(load_settings(None), field) is None


@pytest.mark.parametrize("blank", BLANKS)
def test_a_blank_previous_secret_signs_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blank: str
) -> None:
    """The rotation secret blanked after a rotation, in the environment or in `.env` (an
    unset ${VAR} in a template renders the same)."""
    full_credentials(monkeypatch)
    monkeypatch.setenv("CATBOT_X_CONSUMER_SECRET_PREVIOUS", blank)
    assert load_settings(None).signing_secrets() == ["cs-value-2"]
    monkeypatch.delenv("CATBOT_X_CONSUMER_SECRET_PREVIOUS")
    env_file = tmp_path / "blank.env"
    env_file.write_text(f"CATBOT_X_CONSUMER_SECRET_PREVIOUS={blank}\n")
    assert load_settings(env_file).signing_secrets() == ["cs-value-2"]


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("variable", CREDENTIAL_VARS)
def test_a_blank_required_secret_is_missing_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, blank: str
) -> None:
    full_credentials(monkeypatch)
    monkeypatch.setenv(variable, blank)
    with pytest.raises(ConfigError) as info:
        load_settings(None).require_credentials()
    assert f"{variable}: missing" in str(info.value)


# Log level in any case ----------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["debug", "Debug", "DEBUG", " info ", "Warning", "error"])
def test_log_level_in_any_case(monkeypatch: pytest.MonkeyPatch, typed: str) -> None:
    monkeypatch.setenv("CATBOT_LOG_LEVEL", typed)
    assert load_settings(None).log_level == typed.strip().upper()


def test_an_unknown_log_level_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATBOT_LOG_LEVEL", "verbose")
    assert "CATBOT_LOG_LEVEL" in config_error()


# URLs fit to print ----------------------------------------------------------------------------


@pytest.mark.parametrize("userinfo", ["user:pa55@", "user@", ":pa55@", "us%40er:p%3Ass@"])
@pytest.mark.parametrize("rest", ["127.0.0.1:8099", "api.x.com", "[::1]:80/base?x=1"])
def test_redact_url_hides_the_userinfo_and_keeps_the_rest(userinfo: str, rest: str) -> None:
    shown = redact_url(f"https://{userinfo}{rest}")
    assert shown == f"https://***@{rest}"
    assert "pa55" not in shown and "user" not in shown


def test_redact_url_leaves_plain_urls_alone() -> None:
    for url in ("https://api.x.com", "http://127.0.0.1:8099/path?q=a@b"):
        assert redact_url(url) == url


# The README's configuration table says which settings are secrets ----------------------------


def _readme_config_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            for variable in re.findall(r"`([A-Z_]+)`", cells[0]):
                rows[variable] = cells[1]
    return rows


def test_readme_marks_every_secret_setting() -> None:
    rows = _readme_config_rows()
    for field in secret_fields():
        variable = variable_for(field)
        assert variable in rows, f"{variable} is not in the README's configuration table"
        assert rows[variable].startswith("🔒"), f"{variable} is not marked secret"
    marked = {variable for variable, meaning in rows.items() if meaning.startswith("🔒")}
    assert "CATBOT_PORT" not in marked and "CATBOT_X_API" not in marked
