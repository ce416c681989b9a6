"""What the request handlers share, stored on the aiohttp app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from catbot.emulator.config import EmulatorConfig
from catbot.emulator.delivery import Deliverer
from catbot.emulator.oauth import Credentials
from catbot.emulator.payloads import AppInfo
from catbot.emulator.pipeline import DeliveryPipeline
from catbot.emulator.state import EmulatorState
from catbot.emulator.tasks import BackgroundTasks

__all__ = ["RUNTIME", "BackgroundTasks", "Runtime"]


@dataclass
class Runtime:
    config: EmulatorConfig
    state: EmulatorState
    deliverer: Deliverer
    tasks: BackgroundTasks
    pipeline: DeliveryPipeline

    @property
    def credentials(self) -> Credentials:
        c = self.config
        return Credentials(c.consumer_secret, c.consumer_key, c.access_token, c.access_token_secret)

    @property
    def app_info(self) -> AppInfo:
        return AppInfo(self.config.app_id, self.config.app_name)


RUNTIME = web.AppKey("catbot_emulator_runtime", Runtime)
