"""Everything the emulator remembers, in rooms with one job each.

| room | module | keeps |
|---|---|---|
| `users` | `users` | the accounts: the bot and everyone who wrote or was written to |
| `messages` | `messages` | every DM and X Chat message, both ways |
| `posts` | `posts` | the public thread: mentions, replies, the bot's posts |
| `webhooks`, `subscriptions` | `registry` | the app's webhooks and who is subscribed where |
| `budgets` | `budgets` | rate-limit windows of every route |
| `faults` | `catbot.emulator.faults` | the trouble injected through `/_emulator/faults` |
| `traffic`, `sent` | `traffic` | requests and deliveries logged; bodies kept for redelivery |
| `spreading` | `spreading` | how deliveries spread over several webhooks |
| `stats` | `stats` | the counters of `/_emulator/stats` |
| `xchat` | `xchat` | X Chat's key directory, friends' devices and conversations |

`EmulatorState` only composes them and does what spans rooms: installing faults (they name
a DM budget), removing a webhook (its subscriptions go with it) and `/_emulator/reset`.
Plain objects mutated from the event loop only, so no locking is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catbot.emulator.faults import Faults
from catbot.emulator.state.budgets import Budgets
from catbot.emulator.state.common import ChangeFeed, IdGenerator
from catbot.emulator.state.messages import MessageLog
from catbot.emulator.state.posts import PostBook
from catbot.emulator.state.registry import SubscriptionBook, Webhook, WebhookRegistry
from catbot.emulator.state.spreading import DeliverySpreading
from catbot.emulator.state.stats import Stats
from catbot.emulator.state.traffic import SentBodies, TrafficLog
from catbot.emulator.state.users import Users
from catbot.emulator.state.xchat import XChatState


@dataclass
class EmulatorState:
    bot_user_id: str
    budgets: Budgets
    spreading: DeliverySpreading = field(default_factory=DeliverySpreading)
    feed: ChangeFeed = field(default_factory=ChangeFeed)
    ids: IdGenerator = field(default_factory=IdGenerator)
    users: Users = field(default_factory=Users)
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    sent: SentBodies = field(default_factory=SentBodies)
    xchat: XChatState = field(default_factory=XChatState)
    # The rooms that number their records or tell the chat page about changes share the
    # one id source and the one feed above.
    messages: MessageLog = field(init=False)
    posts: PostBook = field(init=False)
    webhooks: WebhookRegistry = field(init=False)
    subscriptions: SubscriptionBook = field(init=False)
    traffic: TrafficLog = field(init=False)

    def __post_init__(self) -> None:
        self.messages = MessageLog(self.ids, self.feed)
        self.posts = PostBook(self.feed)
        self.webhooks = WebhookRegistry(self.ids, self.feed)
        self.subscriptions = SubscriptionBook(self.ids, self.feed)
        self.traffic = TrafficLog(self.feed)

    def apply_faults(self, faults: Faults) -> None:
        """Install faults, with the DM budget they name (or the configured one)."""
        self.faults = faults
        self.budgets.set_dm_budget(faults.dm_budget_limit, faults.dm_budget_window)

    def remove_webhook(self, webhook_id: str) -> Webhook | None:
        """Forget a webhook and every subscription bound to it, as X does."""
        webhook = self.webhooks.get(webhook_id)
        if webhook is not None:
            self.subscriptions.drop_webhook(webhook_id)
            self.webhooks.remove(webhook_id)
        return webhook

    def reset(self) -> None:
        """Forget traffic, faults, counters and budgets; keep users, webhooks, subscriptions,
        X Chat keys and the delivery mode (a setting, like the command-line flag it mirrors)."""
        self.messages.clear()
        self.posts.clear()
        self.apply_faults(Faults())
        self.stats.clear()
        self.budgets.refill()
        self.sent.clear()
        self.traffic.clear()
        self.spreading.forget_turn()
        self.xchat.reset()
        self.feed.notify("reset", {})
