"""`catbot dev`: the daemon behind an ngrok tunnel, registered as the app's webhook.

    ngrok binary found? -> daemon (in-process) -> one signed call to X (credentials)
    -> ngrok tunnel to the daemon's port -> ensure webhook + subscription -> readable logs
    Ctrl-C / SIGTERM -> delete the webhook it made -> close the tunnel -> stop -> exit 0

Each local precondition fails before the next, costlier step, with a message saying what to
change. What dev mode did goes to stdout; the daemon's logs (text by default) to stderr.

Crash safety: before registering, dev mode writes the tunnel URL (then the webhook id) to a
small state file, `.catbot-dev.json` next to the SQLite database (or in the working
directory with another store; `--state-file` to choose). A clean exit removes the entry. A
run that was killed leaves it behind, and the next run treats that webhook as stale: it is
replaced when it holds the app's webhook limit and deleted otherwise, so dev mode recovers by
itself. Entries of a process that is still running are left alone.

Exit codes: 0 after a clean stop, 1 on a runtime failure (no ngrok, registration refused,
X unreachable), 2 on bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from catbot.app import Daemon
from catbot.commands.ports import free_port
from catbot.commands.tunnel import Tunnel, TunnelError, open_tunnel, resolve_ngrok_path
from catbot.config import ConfigError, Settings, credentials_from, load_settings, redact_url
from catbot.logs import configure_logging, get_logger
from catbot.store import StoreError
from catbot.urls import is_loopback_host
from catbot.x.dm import Credentials
from catbot.x.management import WebhookManager, XApiError, management_for
from catbot.x.registration import EnsureResult, RegistrationError, ensure_webhook

log = get_logger("catbot.dev")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

_STATE_FILE_NAME = ".catbot-dev.json"
_READY = "catbot dev is ready"
# One management call to X; registration includes X's CRC round trip through the tunnel.
API_TIMEOUT_SECONDS = 30.0
LOOPBACK = ("0.0.0.0", "::", "")

T = TypeVar("T")


# --- command line ----------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file", default=".env", type=Path,
        help="read settings from this file too (default: .env, if present)",
    )
    parser.add_argument(
        "--api-base", metavar="URL",
        help="where the X API is (overrides CATBOT_X_API_BASE); point it at `catbot emulator` "
        "for an offline rehearsal",
    )
    parser.add_argument(
        "--port", type=int, help="local webhook port (default: CATBOT_PORT, else 8080)"
    )
    parser.add_argument(
        "--replace", action="store_true",
        help="when the app's webhook limit is taken, delete whatever webhook holds it "
        "(without it only stale dev-mode webhooks are replaced)",
    )
    parser.add_argument(
        "--region", help="ngrok region (us, eu, ap, au, sa, jp, in; default: the nearest)"
    )
    parser.add_argument(
        "--state-file", type=Path, metavar="PATH",
        help=f"where dev mode remembers the webhooks it made (default: {_STATE_FILE_NAME} "
        "next to the SQLite database, else in the working directory)",
    )
    parser.add_argument(
        "--ngrok-timeout", type=float, default=15.0, metavar="SECONDS",
        help="how long ngrok may take to open the tunnel (default 15)",
    )
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="overrides CATBOT_LOG_LEVEL (default INFO)",
    )


@dataclass(frozen=True)
class _DevOptions:
    replace: bool = False
    region: str | None = None
    state_file: Path | None = None
    ngrok_timeout: float = 15.0


def _dev_settings(args: argparse.Namespace) -> Settings:
    """Settings with the command line on top and dev-mode defaults where nothing was set."""
    overrides: dict[str, Any] = {}
    if getattr(args, "api_base", None):
        overrides["x_api_base"] = args.api_base
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    settings = load_settings(getattr(args, "env_file", ".env"), **overrides)
    chosen = settings.model_fields_set
    defaults: dict[str, Any] = {}
    if "log_format" not in chosen:
        defaults["log_format"] = "text"
    # ngrok connects locally: nothing needs to reach the laptop's other interfaces.
    if "host" not in chosen:
        defaults["host"] = "127.0.0.1"
    if "metrics_host" not in chosen:
        defaults["metrics_host"] = "127.0.0.1"
    # Port 0 means "any free port"; dev mode must know it to tunnel and print it.
    if settings.port == 0:
        defaults["port"] = free_port()
    if settings.metrics_port == 0:
        defaults["metrics_port"] = free_port()
    settings = settings.model_copy(update=defaults)
    if settings.x_api == "v1.1" and not settings.x_env_name:
        raise ConfigError(
            "catbot cannot start, configuration is incomplete:\n"
            "  CATBOT_X_ENV_NAME: required with CATBOT_X_API=v1.1 (the environment label)"
        )
    return settings


def run_from_args(args: argparse.Namespace) -> int:
    """Run dev mode until SIGINT/SIGTERM; returns the exit code."""
    try:
        settings = _dev_settings(args)
        credentials = credentials_from(settings)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format, settings.log_level)
    # pyngrok logs every ngrok line at INFO; its errors (WARNING and up) are enough here.
    logging.getLogger("pyngrok").setLevel(max(logging.WARNING, logging.getLogger().level))
    options = _DevOptions(
        replace=bool(getattr(args, "replace", False)),
        region=getattr(args, "region", None),
        state_file=getattr(args, "state_file", None),
        ngrok_timeout=float(getattr(args, "ngrok_timeout", 15.0)),
    )
    return asyncio.run(_run_until_signalled(settings, credentials, options))


async def _run_until_signalled(
    settings: Settings, credentials: Credentials, options: _DevOptions
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            say("still cleaning up (deleting the webhook, closing the tunnel), one moment...")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await _DevMode(settings, credentials, options).run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- state file ------------------------------------------------------------------------


@dataclass(frozen=True)
class _DevRecord:
    """A webhook (or, before X answered, a tunnel URL) that one dev run registered."""

    url: str
    api: str
    api_base: str
    env_name: str | None
    pid: int
    webhook_id: str | None = None
    created_at: float = 0.0

    def same_target(self, settings: Settings) -> bool:
        return (self.api, self.api_base, self.env_name) == (
            settings.x_api, settings.api_base, settings.x_env_name
        )


class _DevState:
    """The state file: a JSON list of _DevRecord, written atomically, gone when empty."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def default_path(settings: Settings) -> Path:
        db = settings.sqlite_path
        return (db.parent if db is not None else Path.cwd()) / _STATE_FILE_NAME

    def load(self) -> list[_DevRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("dev_state_unreadable", path=str(self.path), error=str(exc))
            return []
        records = []
        for item in raw if isinstance(raw, list) else []:
            # Hand-edited or foreign entries are skipped, never fatal.
            if isinstance(item, dict) and isinstance(item.get("pid"), int):
                with contextlib.suppress(TypeError, ValueError):
                    records.append(_DevRecord(**item))
        return records

    def save(self, records: Iterable[_DevRecord]) -> None:
        items = [asdict(r) for r in records]
        if not items:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: a crash mid-write must not lose the records that make recovery possible.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".catbot-dev-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(items, handle, indent=2)
        os.replace(tmp, self.path)

    def update(self, remove: Iterable[_DevRecord] = (), add: Iterable[_DevRecord] = ()) -> None:
        gone = set(remove)
        self.save([r for r in self.load() if r not in gone] + list(add))


def _pid_alive(pid: int) -> bool:
    """Whether the dev run that wrote a record may still be running."""
    if pid == os.getpid():
        return False  # an earlier life of this pid (a restarted container, say)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # The pid may belong to another program by now; on Linux, ask what it runs.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"catbot" in cmdline


# --- the run ---------------------------------------------------------------------------


@dataclass
class Registration:
    result: EnsureResult
    owned: bool  # made by dev mode (now or by a crashed run): delete it on exit
    record: _DevRecord


class _DevMode:
    def __init__(self, settings: Settings, credentials: Credentials, options: _DevOptions) -> None:
        self.settings = settings
        self.credentials = credentials
        self.options = options
        self.state = _DevState(options.state_file or _DevState.default_path(settings))
        self.bot_user_id = settings.bot_user_id
        self.ngrok_path: str | None = None
        # Filled by _register, read when a failed registration is cleaned up.
        self._preexisting: set[str] = set()
        self._stale_urls: set[str] = set()

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        try:
            # Checked before anything starts: without ngrok there is nothing to do.
            self.ngrok_path = resolve_ngrok_path()
        except TunnelError as exc:
            return fail(str(exc))
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(Daemon(s).running())
            except StoreError as exc:
                return fail(f"cannot open the store: {exc}")
            except OSError as exc:
                return fail(
                    f"cannot listen on port {s.port} or metrics port {s.metrics_port}: "
                    f"{exc.strerror or exc}. Choose others with --port / CATBOT_METRICS_PORT."
                )
            say(f"catbot dev: daemon listening on {self.local_webhook_url}")
            session = await stack.enter_async_context(aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS)
            ))
            try:
                manager = await self._manager(session)
            except (XApiError, aiohttp.ClientError, TimeoutError) as exc:
                return fail(self.explain(exc))
            return await self._tunnelled(manager, stop)
        # An exit stack could swallow an exception, as far as mypy knows.
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def local_webhook_url(self) -> str:
        return f"http://{_display_host(self.settings.host)}:{self.settings.port}" + (
            self.settings.webhook_path
        )

    async def _manager(self, session: aiohttp.ClientSession) -> WebhookManager:
        """The management client, after one signed call proving the credentials.

        Done before the tunnel opens, so bad credentials fail in a second, not after ngrok.
        """
        s = self.settings
        probe = management_for(s, self.credentials, session, self.bot_user_id)
        try:
            who = await probe.whoami()
        except XApiError as exc:
            # A stand-in X without the route is no reason to stop; refused credentials are.
            if exc.status != 404 or self.bot_user_id is None:
                raise
            who = self.bot_user_id
        if self.bot_user_id is not None and who != self.bot_user_id:
            log.warning("bot_user_id_mismatch", token_prefix=self.bot_user_id, x_says=who)
        self.bot_user_id = who
        return management_for(s, self.credentials, session, who)

    async def _tunnelled(self, manager: WebhookManager, stop: asyncio.Event) -> int:
        s = self.settings
        try:
            tunnel = await until_stopped(
                open_tunnel(s.port, host=s.host, authtoken=None, ngrok_path=self.ngrok_path,
                            region=self.options.region, timeout=self.options.ngrok_timeout),
                stop,
            )
        except TunnelError as exc:
            return fail(str(exc))
        if tunnel is None:
            say("catbot dev: stopped before the tunnel was open.")
            return EXIT_OK
        say(f"  tunnel {tunnel.public_url} -> {tunnel.local_url} (ngrok)")
        try:
            return await self._registered(manager, tunnel, stop)
        finally:
            await tunnel.aclose()
            say("  tunnel closed")

    async def _registered(self, manager: WebhookManager, tunnel: Tunnel,
                          stop: asyncio.Event) -> int:
        url = tunnel.public_url + self.settings.webhook_path
        # Once started, registration runs to its end even on Ctrl-C: then what it created is
        # known, and removed below. Its calls are bounded by API_TIMEOUT_SECONDS.
        attempt = asyncio.ensure_future(self._register(manager, url))
        await first_of(attempt, stop)
        if not attempt.done():
            say("catbot dev: stopping once the registration in progress is done...")
        try:
            registration = await attempt
        except (RegistrationError, XApiError, aiohttp.ClientError, TimeoutError,
                OSError) as exc:
            await self._forget_failed(manager, url)
            return fail(self.explain(exc))

        for action in registration.result.actions:
            say(f"  {action}")
        code = EXIT_OK
        if not stop.is_set():
            self._print_ready(tunnel, registration)
            code = await self._watch(tunnel, stop)
        say("catbot dev: stopping")
        if not await self._unregister(manager, registration):
            code = EXIT_FAILURE
        return code

    async def _register(self, manager: WebhookManager, url: str) -> Registration:
        s = self.settings
        stale = [r for r in self.state.load() if r.same_target(s) and not _pid_alive(r.pid)]
        self._stale_urls = stale_urls = {r.url for r in stale}
        # Written before X is asked: a crash during registration still leaves the URL known.
        mine = _DevRecord(url=url, api=s.x_api, api_base=s.api_base, env_name=s.x_env_name,
                         pid=os.getpid(), created_at=time.time())
        self.state.update(add=[mine])
        self._preexisting = {w.id for w in await manager.list_webhooks()}
        result = await ensure_webhook(manager, url, replace=self.options.replace,
                                      stale_urls=stale_urls)
        left: set[str] = set()
        if stale:
            # ensure_webhook replaces stale webhooks only when they hold the limit; with a
            # roomier tier they would linger (and fail X's CRC forever): remove them too.
            for webhook in await manager.list_webhooks():
                if webhook.url not in stale_urls or webhook.id == result.webhook.id:
                    continue
                try:
                    await self._delete_quietly(manager, webhook.id)
                except XApiError as exc:
                    # Not fatal: the record stays, and the next run tries again.
                    log.warning("stale_webhook_kept", webhook_id=webhook.id, error=str(exc))
                    left.add(webhook.url)
                    continue
                result.actions.append(f"deleted stale webhook {webhook.id} ({webhook.url})")
        owned = result.created or result.webhook.url in stale_urls
        record = _DevRecord(**{**asdict(mine), "webhook_id": result.webhook.id})
        done = [r for r in stale if r.url not in left]
        self.state.update(remove=[mine, *done], add=[record] if owned else [])
        return Registration(result, owned, record)

    async def _forget_failed(self, manager: WebhookManager, url: str) -> None:
        """After a failed registration: remove what it may have created for our URL."""
        with contextlib.suppress(XApiError, aiohttp.ClientError, TimeoutError, OSError):
            for webhook in await manager.list_webhooks():
                ours = webhook.id not in self._preexisting or url in self._stale_urls
                if webhook.url == url and ours:
                    await manager.delete_webhook(webhook.id)
            self.state.update(remove=[r for r in self.state.load() if r.url == url])

    async def _unregister(self, manager: WebhookManager, registration: Registration) -> bool:
        webhook = registration.result.webhook
        if not registration.owned:
            say(f"  left webhook {webhook.id} in place (dev mode did not create it)")
            return True
        try:
            await self._delete_quietly(manager, webhook.id)
        except (XApiError, aiohttp.ClientError, TimeoutError) as exc:
            say(f"  could not delete webhook {webhook.id}: {exc}. It is recorded in "
                f"{self.state.path}; the next `catbot dev` removes it.")
            return False
        self.state.update(remove=[registration.record])
        say(f"  deleted webhook {webhook.id}")
        return True

    @staticmethod
    async def _delete_quietly(manager: WebhookManager, webhook_id: str) -> None:
        """Delete; a webhook that is already gone is fine."""
        try:
            await manager.delete_webhook(webhook_id)
        except XApiError as exc:
            if exc.status != 404 and not exc.means("code 34", "NotFound", "not found"):
                raise

    async def _watch(self, tunnel: Tunnel, stop: asyncio.Event) -> int:
        """Wait for Ctrl-C; notice when ngrok dies under us (then X cannot reach the bot)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if not stop.is_set() and not tunnel.alive:
                # A terminal's Ctrl-C reaches ngrok (same process group) as it reaches us.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if stop.is_set():
                    break
                say("catbot dev: the ngrok agent exited, X cannot reach the bot any more.")
                return EXIT_FAILURE
        return EXIT_OK

    def _print_ready(self, tunnel: Tunnel, registration: Registration) -> None:
        s = self.settings
        metrics = f"http://{_display_host(s.metrics_host)}:{s.metrics_port}"
        env = f", env {s.x_env_name}" if s.x_env_name else ""
        api = f"{redact_url(s.api_base)} ({s.x_api}{env})"
        lines = [
            f"  X API {api}, bot account {self.bot_user_id}",
            "",
            f"{_READY}: webhook {registration.result.webhook.id} at "
            f"{tunnel.public_url + s.webhook_path}",
            "  DM the bot account from another account: replies and logs follow below.",
            f"  metrics {metrics}/metrics, health {metrics}/livez {metrics}/readyz, "
            f"ngrok inspector {tunnel.api_url}",
        ]
        if _is_loopback(s.api_base):
            lines.append(
                "  a local emulator? send a DM with: curl -s -X POST "
                f"{s.api_base}/_emulator/dm -H 'Content-Type: application/json' "
                "-d '{\"sender_id\": \"42\", \"text\": \"hi\"}'"
            )
        lines.append("  Ctrl-C stops: the webhook is deleted and the tunnel closed.\n")
        say("\n".join(lines))

    def explain(self, exc: BaseException) -> str:
        """What went wrong, in the user's terms, with what to change."""
        if isinstance(exc, aiohttp.ClientError | TimeoutError):
            return (f"cannot reach the X API at {redact_url(self.settings.api_base)}: "
                    f"{exc or type(exc).__name__}. Is the network up (or `catbot emulator` "
                    "running, for a rehearsal)? CATBOT_X_API_BASE / --api-base say where it is.")
        if isinstance(exc, OSError):
            return f"cannot write the dev-mode state file {self.state.path}: {exc}"
        text = str(exc)
        words = f"{text} {exc.__cause__ or ''}".lower()
        hints = []
        if any(w in words for w in ("no answer within", "latency", "timed out", "code 214")):
            hints.append(
                "The CRC answer came too slowly through the tunnel: X wants it within 3 s, "
                "so the answer must come faster. Check the machine's load and network, or "
                "try a closer ngrok region with --region."
            )
        if "does not match" in words or "response_token" in words:
            hints.append(
                "The daemon signed the CRC with another secret than X expects: "
                "CATBOT_X_CONSUMER_SECRET must be this app's API key secret."
            )
        if isinstance(exc, XApiError) and (exc.status == 401 or exc.reason == "bearer"):
            hints.append(
                "X refused the app's credentials: check CATBOT_X_CONSUMER_KEY and "
                "CATBOT_X_CONSUMER_SECRET (the app's API key and secret) and "
                "CATBOT_X_ACCESS_TOKEN / CATBOT_X_ACCESS_TOKEN_SECRET (the bot account's); "
                "code 135 means this machine's clock is off."
            )
        prefix = ("cannot register the webhook" if isinstance(exc, RegistrationError)
                  else "X refused a request")
        return "\n".join([f"{prefix}: {text}", *hints])


# --- small helpers ---------------------------------------------------------------------


async def until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (work cancelled) when `stop` is set first."""
    task = asyncio.ensure_future(work)
    await first_of(task, stop)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def first_of(task: asyncio.Future[Any], stop: asyncio.Event) -> None:
    """Wait until `task` is done or `stop` is set, whichever comes first."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


def say(text: str) -> None:
    """What dev mode did, for the user: stdout, unlike the logs (stderr)."""
    print(text, flush=True)


def fail(message: str) -> int:
    print(f"catbot dev: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in LOOPBACK else host


def _is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname)
