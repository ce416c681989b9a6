"""An ngrok tunnel to a local port, through pyngrok, that never downloads anything.

pyngrok installs ngrok from the internet whenever no binary is at its `ngrok_path`, and has
no switch against it. So the path is resolved and checked here first (explicit argument,
`PYNGROK_NGROK_PATH`, pyngrok's default location, then `ngrok` on the PATH), and only
pyngrok's lower-level calls that never install are used: `process.get_process` to start the
agent and `api_request` against its local API to open and close the tunnel.

The agent runs with a private config file in a temporary folder (mode 0600 for the token),
so the user's own ngrok config is never created or changed. The authtoken comes from the
argument, else `NGROK_AUTHTOKEN`, else (read-only) the user's ngrok config; it is written to
the private config rather than passed as `--authtoken`, which would show it in `ps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pyngrok import conf, installer, ngrok, process
from pyngrok.exception import PyngrokError, PyngrokNgrokError
from pyngrok.log import NgrokLog

AUTHTOKEN_ENV = "NGROK_AUTHTOKEN"
PATH_ENV = "PYNGROK_NGROK_PATH"
AUTHTOKEN_HELP = "https://dashboard.ngrok.com/get-started/your-authtoken"


class TunnelError(Exception):
    """The tunnel could not be opened; the message says why and what to do."""


def resolve_ngrok_path(ngrok_path: str | None = None) -> str:
    """Where the ngrok binary is; TunnelError at once when there is none (no download)."""
    if ngrok_path or os.environ.get(PATH_ENV):
        # The user named a location: use exactly that one, or explain why not.
        path = ngrok_path or os.environ[PATH_ENV]
        source = "" if ngrok_path else f" ({PATH_ENV})"
        if not os.path.isfile(path):
            raise TunnelError(_not_found(f"{path}{source}"))
        if not os.access(path, os.X_OK):
            raise TunnelError(f"ngrok at {path}{source} is not executable (chmod +x it).")
        return path
    if os.path.isfile(conf.DEFAULT_NGROK_PATH) and os.access(conf.DEFAULT_NGROK_PATH, os.X_OK):
        return conf.DEFAULT_NGROK_PATH
    on_path = shutil.which("ngrok")
    if on_path:
        return on_path
    raise TunnelError(_not_found(f"{conf.DEFAULT_NGROK_PATH} nor on the PATH"))


def _not_found(where: str) -> str:
    return (
        f"ngrok was not found at {where}. Install ngrok (https://ngrok.com/download) or set "
        f"{PATH_ENV} to its location; catbot does not download it."
    )


def user_authtoken() -> str | None:
    """The authtoken in the user's own ngrok config (`ngrok config add-authtoken`), if any.

    Read only. The key is `agent.authtoken` (v3) or `authtoken` (v2), one line either way.
    """
    # Computed now, not at import like pyngrok's constant, so HOME/XDG_CONFIG_HOME count.
    candidates = [os.path.join(installer.get_default_ngrok_dir(), "ngrok.yml"),
                  str(Path.home() / ".ngrok2" / "ngrok.yml")]
    for candidate in candidates:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = Path(candidate).read_text(encoding="utf-8")
            match = re.search(r"^\s*authtoken:\s*[\"']?([^\"'\s#]+)", text, re.MULTILINE)
            if match:
                return match.group(1)
    return None


@dataclass
class Tunnel:
    """An open tunnel: `public_url` forwards to `local_url` until `close()`."""

    public_url: str
    local_url: str
    # The agent's local API, which is also its request inspector in a browser.
    api_url: str
    _config: conf.PyngrokConfig = field(repr=False)
    _uri: str = field(repr=False)
    _workdir: tempfile.TemporaryDirectory[str] = field(repr=False)
    _redact: _Redact = field(repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def ngrok_path(self) -> str:
        return self._config.ngrok_path

    @property
    def alive(self) -> bool:
        """False once the ngrok agent process has exited (crashed, or killed by someone)."""
        return not self._closed and process.is_process_running(self._config.ngrok_path)

    def close(self) -> None:
        """Delete the tunnel, stop the agent, remove the private config. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if process.is_process_running(self._config.ngrok_path):
                # Best effort: killing the agent closes the tunnel anyway, this says goodbye.
                with contextlib.suppress(PyngrokError, OSError):
                    ngrok.api_request(f"{self.api_url}{self._uri}", method="DELETE", timeout=3)
        finally:
            process.kill_process(self._config.ngrok_path)
            self._workdir.cleanup()
            self._redact.remove()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


async def open_tunnel(
    port: int,
    *,
    host: str = "127.0.0.1",
    authtoken: str | None = None,
    ngrok_path: str | None = None,
    region: str | None = None,
    # Also pyngrok's own start-up timeout, so not left to the caller's asyncio.timeout.
    timeout: float = 15.0,  # noqa: ASYNC109
) -> Tunnel:
    """Start ngrok and open an http tunnel to `host:port`; TunnelError on any failure.

    pyngrok keeps one agent per binary path in a process, and `close()` stops it: open one
    tunnel at a time per ngrok binary.

    pyngrok's calls block (and its start-up loop can block on a silent agent past its own
    timeout), so they run in a thread under a deadline; at the deadline the agent is killed,
    which unblocks the thread.
    """
    path = resolve_ngrok_path(ngrok_path)
    opener = _Opener(path, f"http://{_upstream_host(host)}:{port}",
                     authtoken or os.environ.get(AUTHTOKEN_ENV) or user_authtoken(), region,
                     timeout)
    work = asyncio.ensure_future(asyncio.to_thread(opener.open))
    try:
        return await asyncio.wait_for(asyncio.shield(work), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        # Out of time, or Ctrl-C during start-up: leave no agent behind.
        await asyncio.to_thread(opener.abort, work)
        late: Tunnel | None = None
        with contextlib.suppress(BaseException):
            late = await work
        if late is not None:
            await late.aclose()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise TunnelError(
            f"ngrok did not open a tunnel within {timeout:g} s{opener.errors_suffix()}. "
            "Is the network up and ngrok's service reachable?"
        ) from None


def _upstream_host(host: str) -> str:
    """The address ngrok should forward to: loopback when the daemon listens everywhere."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


class _Opener:
    """The blocking part, run in a worker thread."""

    def __init__(self, path: str, upstream: str, authtoken: str | None, region: str | None,
                 timeout: float) -> None:
        self.path = path
        self.upstream = upstream
        self.authtoken = authtoken
        self.workdir = tempfile.TemporaryDirectory(prefix="catbot-ngrok-")
        self.errors: deque[str] = deque(maxlen=10)
        self.aborted = threading.Event()
        config_path = Path(self.workdir.name) / "ngrok.yml"
        config: dict[str, Any] = {"version": "3"}
        if authtoken:
            config["agent"] = {"authtoken": authtoken}
        # Created 0600 before the token is written into it. JSON is YAML, as ngrok wants.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        self.config = conf.PyngrokConfig(
            ngrok_path=path,
            config_path=str(config_path),
            region=region,
            startup_timeout=max(1, int(timeout + 0.999)),
            request_timeout=min(5.0, timeout),
            log_event_callback=self._on_log,
        )
        # PyngrokConfig falls back to NGROK_AUTHTOKEN and would put it on the command line.
        self.config.auth_token = None
        # pyngrok logs every ngrok line, and ngrok echoes a rejected token back in its error.
        self.redact = _Redact(authtoken)
        logging.getLogger("pyngrok.process.ngrok").addFilter(self.redact)

    def _on_log(self, log: NgrokLog) -> None:
        if log.lvl in ("ERROR", "CRITICAL"):
            self.errors.append(self._clean(log.err or log.msg or log.line))

    def _clean(self, text: str) -> str:
        # ngrok quotes newlines as \n and echoes a bad token back: neither belongs in our output.
        text = re.sub(r"(\\n)+", " ", text).strip()
        if self.authtoken:
            text = text.replace(self.authtoken, "***")
        return text

    def errors_suffix(self) -> str:
        return f"; ngrok said: {self.errors[-1]}" if self.errors else ""

    def open(self) -> Tunnel:
        try:
            agent = process.get_process(self.config)
            if self.aborted.is_set():
                raise TunnelError("aborted")
            data = ngrok.api_request(
                f"{agent.api_url}/api/endpoints", method="POST",
                data={"name": f"catbot-{uuid.uuid4().hex[:8]}", "upstream": {"url": self.upstream}},
                timeout=self.config.request_timeout,
            )
            found = ngrok.NgrokTunnel(data, self.config, agent.api_url)
            if not found.public_url or not found.uri:
                raise TunnelError(f"ngrok answered without a public URL: {data}")
            return Tunnel(
                public_url=_public(found.public_url),
                local_url=self.upstream,
                api_url=str(agent.api_url),
                _config=self.config,
                _uri=found.uri,
                _workdir=self.workdir,
                _redact=self.redact,
            )
        except PyngrokNgrokError as exc:
            self._cleanup()
            said = self._clean(exc.ngrok_error) if exc.ngrok_error else None
            raise TunnelError(self._explain(said or self._clean(str(exc)))) from None
        except (PyngrokError, OSError, ValueError) as exc:
            self._cleanup()
            raise TunnelError(f"ngrok failed: {self._clean(str(exc))}") from None
        except BaseException:
            self._cleanup()
            raise

    def _explain(self, said: str) -> str:
        if "unable to start" in said:
            said = (f"{self.path} exited without opening its API (its own message, if any, "
                    "is printed just above)")
        message = f"ngrok failed to start: {said}"
        if "authentication failed" in said or "ERR_NGROK_105" in said or "4018" in said:
            where = ("ngrok refused the authtoken (from NGROK_AUTHTOKEN or your "
                     "ngrok config)" if self.authtoken else
                     f"no authtoken was found ({AUTHTOKEN_ENV} unset, none in your ngrok config)")
            message += (f"\n{where}. Set {AUTHTOKEN_ENV} to the authtoken shown at "
                        f"{AUTHTOKEN_HELP}.")
        return message

    def abort(self, work: asyncio.Future[Tunnel]) -> None:
        """Kill the agent from another thread; pyngrok's start-up loop then sees it exit.

        pyngrok holds its process lock for the whole start-up, so kill_process() would wait
        for it: the process is read from its registry without the lock instead. It appears
        there right after it was spawned, hence the short wait for it.
        """
        self.aborted.set()
        deadline = time.monotonic() + 2.0
        while not work.done() and time.monotonic() < deadline:
            started = process._current_processes.get(self.path)
            if started is not None:
                with contextlib.suppress(OSError):
                    started.proc.kill()
                return
            time.sleep(0.02)

    def _cleanup(self) -> None:
        process.kill_process(self.path)
        self.workdir.cleanup()
        self.redact.remove()


class _Redact(logging.Filter):
    """Replaces the authtoken in pyngrok's log records of ngrok's output."""

    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            message = record.getMessage()
            if self.secret in message:
                record.msg, record.args = message.replace(self.secret, "***"), ()
        return True

    def remove(self) -> None:
        logging.getLogger("pyngrok.process.ngrok").removeFilter(self)


def _public(url: str) -> str:
    """ngrok serves every http endpoint over TLS too, and X wants https outside loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parts.scheme == "http" and not loopback:
        return urlunsplit(parts._replace(scheme="https"))
    return url.rstrip("/")
