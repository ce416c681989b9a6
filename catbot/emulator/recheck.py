"""X's periodic CRC re-check of registered webhooks.

Every `crc_interval` seconds each valid webhook is challenged again; a failure marks it
invalid with the reason, and it then gets no events until a `PUT` revalidates it. Invalid
webhooks are not re-checked: on X only `PUT` brings them back. Start-up webhooks still
waiting for their first CRC are left to their own retry loop.
"""

from __future__ import annotations

import asyncio
import logging

from catbot.emulator.runtime import Runtime

log = logging.getLogger("catbot.emulator.recheck")


async def recheck_once(runtime: Runtime) -> None:
    webhooks = [w for w in runtime.state.webhooks.all() if w.valid]
    outcomes = await asyncio.gather(*(runtime.deliverer.crc(w) for w in webhooks))
    for webhook, outcome in zip(webhooks, outcomes, strict=True):
        if not outcome.ok:
            log.warning("webhook %s invalidated by the periodic CRC: %s", webhook.id, outcome.error)


async def recheck_forever(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await recheck_once(runtime)
