"""Only the developer's own tools drive the emulator's control API and chat page.

The control API has no authentication and signs whatever it is asked to deliver with the
app's consumer secret. A web page the developer happens to visit must not be able to use it:
- a cross-site request carries an `Origin` that is not the emulator's own: refused (403);
- DNS rebinding (a page's host name made to resolve to 127.0.0.1, so that the browser
  treats the emulator as that page's origin) shows in `Host`: only loopback names and
  addresses are answered (403), since a rebound name is never one of those;
- a body must be `Content-Type: application/json` (415): the types a page may send without
  the browser asking first (`text/plain`, forms) are exactly the ones refused, and a JSON
  request from another origin needs a CORS preflight that this server never grants. (An
  empty body, e.g. `POST /_emulator/reset`, is taken whatever it is labelled: it carries
  nothing, and a browser adds `Origin` to any cross-origin POST.)

X's own routes (`/2/...`, `/1.1/...`, `/oauth2/...`) are left alone: they take OAuth
credentials a page does not have, and clients reach them under whatever name they were
configured with, as they reach X. Everything else (the control API, the chat page, its
static files and event stream, and any unknown path) is guarded.

With `--allow-remote` the emulator is meant to be reached from other machines: then `Host`
may also be any IP address (a rebound name is never an address) or the `--host` name.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from aiohttp import web
from yarl import URL

from catbot.emulator.runtime import RUNTIME
from catbot.emulator.urls import is_loopback_host

log = logging.getLogger("catbot.emulator.guard")

X_API_PREFIXES = ("/2/", "/1.1/", "/oauth2/")
JSON = "application/json"
# Methods a page can only send cross-origin after a preflight, and that carry no body here.
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def is_x_api(path: str) -> bool:
    return path.startswith(X_API_PREFIXES)


def _host_name(host_header: str) -> str | None:
    """The name or address in a `Host` value (port and IPv6 brackets removed); None when it
    is not a plain `host[:port]` (user info, a path, a bad port: never ours)."""
    try:
        url = URL(f"http://{host_header}")
        url.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError:
        return None
    if url.user is not None or url.password is not None or url.raw_path not in ("", "/"):
        return None
    if url.query_string or url.fragment:
        return None
    return url.host or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, *, allow_remote: bool, listen_host: str) -> bool:
    if not host_header:
        return False
    name = _host_name(host_header)
    if name is None:
        return False
    if is_loopback_host(name):
        return True
    if allow_remote:
        return _is_ip(name) or name.lower() == listen_host.strip("[]").lower()
    return False


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    """`Origin` names exactly the server the request was sent to (scheme, host and port)."""
    try:
        theirs = URL(origin)
        ours = URL(f"{scheme}://{host_header}")
        # An opaque origin ("null": sandboxed frames, file: pages) has no host.
        if not theirs.host or theirs.raw_path not in ("", "/") or theirs.query_string:
            return False
        return (theirs.scheme, theirs.host.lower(), theirs.port) == (
            ours.scheme,
            (ours.host or "").lower(),
            ours.port,
        )
    except ValueError:
        return False


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    # Once per request, without headers or body: the page behind it is a stranger.
    log.warning("refused %s %s: %s", request.method, request.path, message)
    return web.json_response({"error": message}, status=status)


@web.middleware
async def local_only(request: web.Request, handler: Any) -> web.StreamResponse:
    if is_x_api(request.path):
        response: web.StreamResponse = await handler(request)
        return response
    config = request.app[RUNTIME].config
    host = request.headers.get("Host")
    if not host_allowed(host, allow_remote=config.allow_remote, listen_host=config.host):
        return _refuse(
            request,
            403,
            "the control API answers requests addressed to 127.0.0.1, localhost or [::1] "
            "only (Host was not one of them)",
        )
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request.scheme, host or ""):
        return _refuse(request, 403, "cross-origin requests to the control API are refused")
    # An empty body carries nothing a page could choose (and HTTP clients label it as they
    # like: aiohttp says application/octet-stream); any other body must be JSON.
    if request.method not in _BODYLESS and request.body_exists and request.content_type != JSON:
        return _refuse(request, 415, f"the control API takes {JSON} bodies only")
    response = await handler(request)
    return response
