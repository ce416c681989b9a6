"""The emulator's rooms, and what `EmulatorState` does across them (no sockets)."""

from __future__ import annotations

import time
from typing import Any

from catbot.emulator.faults import Faults
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.budgets import Budgets
from catbot.emulator.state.posts import Post
from catbot.emulator.state.spreading import DeliverySpreading
from catbot.emulator.state.stats import Stats
from catbot.emulator.state.traffic import SignedBody

BOT = "1000"


def new_state() -> EmulatorState:
    state = EmulatorState(
        bot_user_id=BOT,
        budgets=Budgets(2, 60.0),
        spreading=DeliverySpreading("round_robin", 2),
    )
    state.users.ensure(BOT, "catbot")
    return state


def test_reset_forgets_traffic_faults_counters_and_budgets_in_every_room() -> None:
    state = new_state()
    now = time.time()
    state.users.ensure("42")
    state.messages.record(sender_id="42", recipient_id=BOT, text="hi", direction="in")
    state.posts.add(Post("1", "42", "@catbot hi", 0, "1"))
    hook = state.webhooks.add("https://example.com/webhook")
    state.subscriptions.add(webhook_id=hook.id, user_id=BOT, kind="account_activity")
    state.apply_faults(Faults(dm_fail_next=3, dm_budget_limit=1))
    state.stats.dm_requests = 5
    state.budgets.dm(BOT).consume(now)
    state.budgets.named("tweets", 100, 900.0).consume(now)
    state.sent.remember([SignedBody(hook.id, b"{}", None, "a", ("e1",))])
    state.traffic.log_request({"route": "dm", "at": now})
    state.traffic.log_delivery({"at": now})
    state.spreading.last_webhook_id, state.spreading.planned = hook.id, 4
    state.xchat.directory.spend_write(BOT, now)
    heard: list[str] = []
    state.feed.listen(lambda topic, data: heard.append(topic))

    state.reset()

    assert state.messages.conversation(None) == [] and state.posts.thread(None) == []
    assert state.faults == Faults() and state.budgets.dm_limit == 2
    assert state.stats == Stats()
    assert state.budgets.dm(BOT).peek(now).remaining == 2
    assert state.budgets.named("tweets", 100, 900.0).peek(now).remaining == 100
    assert state.sent.carrying("e1") is None
    assert state.traffic.requests() == [] and state.traffic.deliveries() == []
    turn = state.spreading.to_json()
    assert (turn["last_webhook_id"], turn["planned"]) == (None, 0)
    assert not state.xchat.directory.writes
    assert heard == ["reset"]
    # Settings and the registry stay, as the command-line flags and X's records would.
    assert (state.spreading.mode, state.spreading.duplicate_every) == ("round_robin", 2)
    assert state.webhooks.ids() == [hook.id] and len(state.subscriptions.all()) == 1
    assert "42" in state.users


def test_removing_a_webhook_drops_its_subscriptions_only() -> None:
    state = new_state()
    kept, gone = (
        state.webhooks.add("https://a.example/w"),
        state.webhooks.add("https://b.example/w"),
    )
    for hook in (kept, gone):
        state.subscriptions.add(webhook_id=hook.id, user_id=BOT, kind="account_activity")
    stream_only = state.subscriptions.add(
        webhook_id=None, user_id=BOT, kind="activity", event_type="dm.received"
    )
    heard: list[tuple[str, dict[str, Any]]] = []
    state.feed.listen(lambda topic, data: heard.append((topic, data)))

    assert state.remove_webhook(gone.id) is gone
    assert state.remove_webhook(gone.id) is None
    assert state.webhooks.ids() == [kept.id]
    assert [s.webhook_id for s in state.subscriptions.all()] == [kept.id, None]
    assert state.subscriptions.get(stream_only.id) is stream_only
    assert heard == [("webhooks", {})]


def test_a_dm_budget_change_starts_fresh_dm_windows_and_leaves_the_others() -> None:
    state = new_state()
    now = time.time()
    state.budgets.dm(BOT).consume(now)
    state.budgets.named("tweets", 100, 900.0).consume(now)

    state.apply_faults(Faults(dm_budget_limit=5, dm_budget_window=30.0))
    assert state.budgets.dm(BOT).peek(now).remaining == 5
    assert state.budgets.named("tweets", 100, 900.0).peek(now).remaining == 99

    state.apply_faults(Faults())  # back to the configured budget, a fresh window again
    window = state.budgets.dm(BOT)
    assert (window.limit, window.window) == (2, 60.0)
    # A named window whose budget changed starts afresh too.
    assert state.budgets.named("tweets", 50, 900.0).peek(now).remaining == 50
