"""What the request handlers share, stored on the aiohttp app under one typed key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from catbot.emulator.config import EmulatorConfig
from catbot.emulator.delivery import Deliverer
from catbot.emulator.oauth import Credentials
from catbot.emulator.payloads import AppInfo
from catbot.emulator.state import EmulatorState

log = logging.getLogger("catbot.emulator")


class BackgroundTasks:
    """Fire-and-forget work that must still end with the app.

    Holding the tasks keeps them from being garbage-collected mid-flight, and `close()` lets
    the cleanup context cancel them before the HTTP session they use goes away.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Runtime:
    config: EmulatorConfig
    state: EmulatorState
    deliverer: Deliverer
    tasks: BackgroundTasks

    @property
    def credentials(self) -> Credentials:
        c = self.config
        return Credentials(c.consumer_secret, c.consumer_key, c.access_token, c.access_token_secret)

    @property
    def app_info(self) -> AppInfo:
        return AppInfo(self.config.app_id, self.config.app_name)


RUNTIME = web.AppKey("catbot_emulator_runtime", Runtime)
