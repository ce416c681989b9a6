"""The daemon's lifecycle (`catbot.app`): parts started in order and stopped in reverse, the
shutdown hooks first, and what that means for X while the workers finish."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from catbot.app import CleanupContext, Daemon, Lifecycle
from catbot.config import load_settings
from catbot.signing import SIGNATURE_HEADER, sign_body
from catbot.store.sqlite import SQLiteStore
from testkit.processes import BOT_ID, CREDENTIALS, WEBHOOK_PATH, free_port

SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]


def recording(name: str, log: list[str], fail: bool = False) -> CleanupContext:
    @asynccontextmanager
    async def part() -> AsyncIterator[None]:
        if fail:
            raise RuntimeError(f"{name} cannot start")
        log.append(f"start {name}")
        try:
            yield
        finally:
            log.append(f"stop {name}")

    return part


async def test_parts_start_in_order_and_stop_in_reverse_after_the_shutdown_hooks() -> None:
    log: list[str] = []
    lifecycle = Lifecycle([recording("store", log), recording("workers", log)],
                          on_shutdown=[lambda: log.append("shutdown")])
    async with lifecycle.running():
        log.append("running")
    assert log == ["start store", "start workers", "running", "shutdown",
                   "stop workers", "stop store"]


async def test_a_part_that_cannot_start_stops_the_started_ones_and_runs_no_hook() -> None:
    log: list[str] = []
    lifecycle = Lifecycle(
        [recording("store", log), recording("listener", log, fail=True),
         recording("workers", log)],
        on_shutdown=[lambda: log.append("shutdown")],
    )
    with pytest.raises(RuntimeError, match="listener cannot start"):
        async with lifecycle.running():
            log.append("running")
    assert log == ["start store", "stop store"]


async def test_the_hooks_run_first_when_the_body_fails_too() -> None:
    log: list[str] = []
    lifecycle = Lifecycle([recording("store", log)], on_shutdown=[lambda: log.append("shutdown")])
    with pytest.raises(KeyError):
        async with lifecycle.running():
            raise KeyError("boom")
    assert log == ["start store", "shutdown", "stop store"]


def delivery(event_id: str) -> bytes:
    return json.dumps({"for_user_id": BOT_ID, "direct_message_events": [{
        "type": "message_create", "id": event_id, "created_timestamp": str(int(time.time() * 1000)),
        "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": "42",
                           "message_data": {"text": "hi"}},
    }]}).encode()


async def test_while_the_workers_finish_the_daemon_is_unready_and_refuses_events(
    tmp_path: Path,
) -> None:
    port, metrics_port = free_port(), free_port()
    db = tmp_path / "catbot.db"
    daemon = Daemon(load_settings(
        env_file=None, host="127.0.0.1", port=port, metrics_host="127.0.0.1",
        metrics_port=metrics_port, store_url=f"sqlite:///{db}",
        # Nothing listens there: the reply cannot go out, so its job stays in the store.
        x_api_base="http://127.0.0.1:9", shutdown_grace_seconds=1,
        **{name.removeprefix("CATBOT_").lower(): value for name, value in CREDENTIALS.items()},
    ))
    webhook = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    during_stop: dict[str, int] = {}
    async with aiohttp.ClientSession() as client:

        async def post(event_id: str) -> int:
            body = delivery(event_id)
            async with client.post(webhook, data=body,
                                   headers={SIGNATURE_HEADER: sign_body(SECRET, body)}) as r:
                return r.status

        async def ready() -> int:
            async with client.get(readyz) as r:
                return r.status

        async with daemon.running():
            assert await post("1") == 200
            assert await ready() == 200
            assert daemon.outbox is not None
            stop_workers = daemon.outbox.stop

            async def stop_watched(grace_seconds: float) -> None:
                # Both listeners are still up while the workers stop.
                during_stop["post"] = await post("2")
                during_stop["ready"] = await ready()
                await stop_workers(grace_seconds)

            daemon.outbox.stop = stop_watched  # type: ignore[method-assign]

    assert during_stop == {"post": 503, "ready": 503}
    unavailable = daemon.metrics.registry.get_sample_value(
        "catbot_webhook_requests_total", {"outcome": "unavailable"})
    assert unavailable == 1
    store = SQLiteStore(db)
    await store.open()
    try:
        # The acknowledged event waits for the next run; the refused one was never stored.
        assert [job.event_id for job in await store.pending()] == ["1"]
    finally:
        await store.close()
