"""The "ensure" decisions, against an in-memory X that keeps X's rules (limit, CRC, dupes).

The same flows run against the real emulator in tests/test_admin_cli.py; this file pins
down each branch of the decision quickly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from catbot.x.management import Subscription, Webhook, XApiError
from catbot.x.registration import RegistrationError, _is_tunnel_url, ensure_webhook


@dataclass
class MemoryX:
    limit: int = 1
    crc_ok: set[str] = field(default_factory=set)  # URLs whose CRC passes
    hooks: dict[str, Webhook] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    flavour: str = "v2"
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    async def whoami(self) -> str:
        return "1000"

    async def list_webhooks(self) -> list[Webhook]:
        self.calls.append("list")
        return list(self.hooks.values())

    async def create_webhook(self, url: str) -> Webhook:
        self.calls.append(f"create {url}")
        if any(h.url == url for h in self.hooks.values()):
            raise XApiError(400, "DuplicateUrlFailed", "DuplicateUrlFailed: url exists")
        if len(self.hooks) >= self.limit:
            raise XApiError(400, "WebhookLimitExceeded", "WebhookLimitExceeded: too many")
        if url not in self.crc_ok:
            raise XApiError(400, "CrcValidationFailed", "CrcValidationFailed: bad token")
        hook = Webhook(str(next(self._ids)), url, True)
        self.hooks[hook.id] = hook
        return hook

    async def revalidate(self, webhook_id: str) -> bool:
        self.calls.append(f"revalidate {webhook_id}")
        hook = self.hooks[webhook_id]
        self.hooks[webhook_id] = Webhook(hook.id, hook.url, hook.url in self.crc_ok)
        return hook.url in self.crc_ok

    async def delete_webhook(self, webhook_id: str) -> None:
        self.calls.append(f"delete {webhook_id}")
        del self.hooks[webhook_id]
        self.subscribed.discard(webhook_id)

    async def subscribe(self, webhook_id: str) -> None:
        self.calls.append(f"subscribe {webhook_id}")
        self.subscribed.add(webhook_id)

    async def is_subscribed(self, webhook_id: str) -> bool:
        return webhook_id in self.subscribed

    async def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        return [Subscription("1000", webhook_id)] if webhook_id in self.subscribed else []

    async def unsubscribe(self, webhook_id: str, user_id: str) -> None:
        self.subscribed.discard(webhook_id)

    def add(self, url: str, valid: bool = True) -> Webhook:
        hook = Webhook(str(next(self._ids)), url, valid)
        self.hooks[hook.id] = hook
        return hook


URL = "https://bot.example.com/webhook/twitter"


async def test_creates_and_subscribes_when_nothing_exists() -> None:
    x = MemoryX(crc_ok={URL})
    result = await ensure_webhook(x, URL)
    assert result.created and result.webhook.url == URL and result.webhook.valid
    assert x.subscribed == {result.webhook.id}


async def test_is_idempotent() -> None:
    x = MemoryX(crc_ok={URL})
    first = await ensure_webhook(x, URL)
    x.calls.clear()
    second = await ensure_webhook(x, URL)
    assert second.webhook.id == first.webhook.id and not second.created
    assert [c for c in x.calls if not c.startswith("list")] == []


async def test_revalidates_an_invalid_webhook_with_the_same_url() -> None:
    x = MemoryX(crc_ok={URL})
    hook = x.add(URL, valid=False)
    result = await ensure_webhook(x, URL)
    assert result.webhook.id == hook.id and result.webhook.valid and not result.created
    assert f"revalidate {hook.id}" in x.calls


async def test_revalidation_failure_explains_the_crc() -> None:
    x = MemoryX()
    x.add(URL, valid=False)
    with pytest.raises(RegistrationError, match="CATBOT_X_CONSUMER_SECRET"):
        await ensure_webhook(x, URL)


@pytest.mark.parametrize("stale", ["https://ab12.ngrok-free.app/webhook/twitter",
                                   "https://old.ngrok.io/webhook/twitter"])
async def test_replaces_a_stale_tunnel_webhook_at_the_limit(stale: str) -> None:
    x = MemoryX(crc_ok={URL})
    old = x.add(stale)
    result = await ensure_webhook(x, URL)
    assert result.created and [w.id for w in result.replaced] == [old.id]
    assert list(x.hooks.values()) == [result.webhook]


async def test_replaces_a_url_this_machine_registered_before() -> None:
    x = MemoryX(crc_ok={URL})
    old = x.add("http://127.0.0.1:5555/webhook/twitter")
    result = await ensure_webhook(x, URL, stale_urls={old.url})
    assert [w.id for w in result.replaced] == [old.id]


async def test_refuses_to_remove_someone_elses_webhook_without_replace() -> None:
    x = MemoryX(crc_ok={URL})
    other = x.add("https://production.example.com/hook")
    with pytest.raises(RegistrationError, match="--replace") as info:
        await ensure_webhook(x, URL)
    assert other.url in str(info.value)
    assert other.id in x.hooks  # untouched
    result = await ensure_webhook(x, URL, replace=True)
    assert [w.id for w in result.replaced] == [other.id]


async def test_crc_failure_on_create_says_what_to_fix() -> None:
    x = MemoryX()
    with pytest.raises(RegistrationError, match="within 3 seconds"):
        await ensure_webhook(x, URL)
    assert x.hooks == {}


def test_tunnel_hosts() -> None:
    assert _is_tunnel_url("https://x1.ngrok-free.app/a")
    assert not _is_tunnel_url("https://ngrok-free.app.evil.example/a")
    assert not _is_tunnel_url("https://bot.example.com/a")
