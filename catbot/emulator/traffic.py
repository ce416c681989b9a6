"""Every X request passes here: injected latency, dropped connections, the request log.

The control API (`/_emulator/...`) is not logged, and gets latency only from a latency key
that names its path explicitly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from catbot.emulator.faults import route_class
from catbot.emulator.runtime import RUNTIME

# What the handler made of the request, for the log: "sent", "rate_limited", "failed", ...
OUTCOME = web.RequestKey("catbot_emulator_outcome", str)
DROPPED = "dropped"


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without an answer, as a broken network path would.

    The response returned is never written: aiohttp finds the transport closed.
    """
    request[OUTCOME] = DROPPED
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


def _canonical(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def traffic(request: web.Request, handler: Any) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    state = runtime.state
    arrived = time.time()
    cls = route_class(request.path)
    delay = state.faults.latency_for(request.method, request.path, _canonical(request))
    if delay > 0:
        state.stats.latency_injected += 1
        await asyncio.sleep(delay)
    status: int | None = None
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    finally:
        if cls != "control":
            outcome = request.get(OUTCOME)
            state.traffic.log_request(
                {
                    "at": arrived,
                    "answered_at": time.time(),
                    "method": request.method,
                    "path": request.path,
                    "route": cls,
                    "status": None if outcome == DROPPED else status,
                    "outcome": outcome,
                    "latency_injected": delay,
                }
            )
