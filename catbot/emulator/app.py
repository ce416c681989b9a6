"""Assemble the emulator's aiohttp app and run it.

`build_app` wires state, routes and the lifecycle (the delivery client session, the
start-up CRC tasks and the periodic CRC re-check live in one cleanup context, so they start
and stop with the app).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from catbot.emulator import (
    api_common,
    auth_routes,
    chat,
    control,
    dm_api,
    errors,
    management_activity,
    management_v1,
    management_v2,
    tweets_api,
    xchat_api,
    xchat_friends,
)
from catbot.emulator.config import EmulatorConfig
from catbot.emulator.delivery import Deliverer
from catbot.emulator.guard import local_only
from catbot.emulator.pipeline import DeliveryPipeline
from catbot.emulator.recheck import recheck_forever
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.budgets import Budgets
from catbot.emulator.state.spreading import DeliverySpreading
from catbot.emulator.tasks import BackgroundTasks
from catbot.emulator.traffic import traffic
from catbot.emulator.webhooks import add_startup_webhook

log = logging.getLogger("catbot.emulator")

# Larger than the daemon's 1 MiB default, so tests can push an oversized delivery through.
_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# In-flight requests get this long at shutdown; SIGTERM must end the emulator promptly.
_SHUTDOWN_TIMEOUT = 2.0


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer is JSON, even router errors: tweepy parses all error bodies as JSON."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.path.startswith(control.PREFIX + "/"):
            body: dict[str, Any] = {"error": exc.reason}
        elif exc.status == 404:
            body = errors.not_found().v11_body
        else:
            body = {"errors": [{"message": exc.reason}], "title": exc.reason, "status": exc.status}
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(body, status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(
            {"errors": [{"code": 131, "message": "Internal error"}]}, status=500
        )
    return response


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    config = runtime.config
    await runtime.deliverer.open()
    try:
        for url in config.webhook_urls:
            webhook = runtime.state.webhooks.by_url(url)
            if webhook is not None:
                runtime.tasks.spawn(
                    runtime.deliverer.validate_until_valid(
                        webhook.id, config.crc_retry_interval, config.crc_retry_total
                    ),
                    name=f"crc-{webhook.id}",
                )
        runtime.tasks.spawn(recheck_forever(runtime, config.crc_interval), name="crc-recheck")
        yield
    finally:
        # Tasks first: they use the session.
        await runtime.tasks.close()
        await runtime.deliverer.close()


def build_app(config: EmulatorConfig) -> web.Application:
    state = EmulatorState(
        bot_user_id=config.bot_user_id,
        budgets=Budgets(config.dm_rate_limit, config.dm_rate_window),
        spreading=DeliverySpreading(config.delivery_mode, config.duplicate_every),
    )
    state.users.ensure(config.bot_user_id, config.bot_name).screen_name = config.bot_screen_name
    deliverer = Deliverer(
        state,
        config.consumer_secret,
        crc_timeout=config.crc_timeout,
        delivery_timeout=config.delivery_timeout,
    )
    tasks = BackgroundTasks()
    pipeline = DeliveryPipeline(state, deliverer, tasks, config.redelivery_delays)
    runtime = Runtime(config, state, deliverer, tasks, pipeline)
    app = web.Application(
        # `local_only` first: a request it refuses reaches nothing else. Then `traffic`: it
        # logs the status the client finally gets.
        middlewares=[
            local_only,
            traffic,
            json_errors,
            api_common.refusals,
            control.control_errors,
        ],
        client_max_size=_MAX_REQUEST_BYTES,
    )
    app[RUNTIME] = runtime
    for url in config.webhook_urls:
        add_startup_webhook(runtime, url)
    dm_api.add_routes(app)
    tweets_api.add_routes(app)
    management_v2.add_routes(app)
    management_activity.add_routes(app)
    management_v1.add_routes(app)
    auth_routes.add_routes(app)
    control.add_routes(app)
    chat.add_routes(app)
    xchat_api.add_routes(app)
    xchat_friends.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app


@dataclass
class RunningEmulator:
    app: web.Application
    runner: web.AppRunner
    url: str  # base URL with the port actually bound (useful with port 0)

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_emulator(config: EmulatorConfig) -> RunningEmulator:
    """Serve the emulator in the running loop; the caller stops it with `stop()`."""
    app = build_app(config)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RunningEmulator(app, runner, f"http://{host}:{port}")
