"""What to answer: a pure function of the message, the user's state and the clock.

No I/O here. The outbox loads the state, calls `decide`, fetches a fact when the decision
asks for one, sends, and persists `Decision.state`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum

# X caps a DM at 10,000 characters; facts are far shorter, the suffix is user-set.
MAX_DM_CHARS = 10_000

HELP_TEXT = (
    "I'm catbot: send me any message and I'll answer with a cat fact. "
    "Commands: HELP (this message), STOP (no more facts), START (facts again)."
)
STOP_TEXT = "You won't get any more cat facts. Send START whenever you miss them."
START_TEXT = "Welcome back! Cat facts are on again. Send STOP to pause them."

_COMMANDS = {
    "help": "help",
    "?": "help",
    "commands": "help",
    "stop": "stop",
    "unsubscribe": "stop",
    "quit": "stop",
    "start": "start",
    "unstop": "start",
    "subscribe": "start",
}


class Action(Enum):
    FACT = "fact"
    HELP = "help"
    STOPPED = "stopped"
    STARTED = "started"
    NONE = "none"


@dataclass(frozen=True)
class UserState:
    user_id: str
    opted_out: bool = False
    last_fact_at: float | None = None
    day: str = ""
    replies_today: int = 0
    seen_facts: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Policy:
    cooldown_seconds: float = 10.0
    daily_cap: int = 50
    trigger: re.Pattern[str] | None = None
    reply_suffix: str = ""

    @classmethod
    def build(
        cls, cooldown_seconds: float, daily_cap: int, trigger: str | None, reply_suffix: str
    ) -> Policy:
        pattern = re.compile(trigger, re.IGNORECASE) if trigger else None
        return cls(cooldown_seconds, daily_cap, pattern, reply_suffix)


@dataclass(frozen=True)
class Decision:
    action: Action
    # Bounded label for metrics and logs: why this action (never user text).
    reason: str
    state: UserState
    # The full reply for commands; None for FACT (the caller supplies the fact) and NONE.
    text: str | None = None

    @property
    def replies(self) -> bool:
        return self.action is not Action.NONE


def command_of(text: str) -> str | None:
    """`help`, `stop` or `start` when the whole message is that command, else None."""
    word = re.sub(r"[\s!.?]+$", "", text.strip().lower()) or text.strip()
    return _COMMANDS.get(word)


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def decide(text: str, state: UserState, now: float, policy: Policy) -> Decision:
    """Decide the reply to one DM.

    Commands are answered even during the cooldown, so a user can always learn how to stop
    the bot; STOP is confirmed once and never counted against the daily cap, because an
    opt-out must work even for a user who has used up their replies.
    """
    state = _roll_day(state, now)
    command = command_of(text)

    if command == "stop":
        if state.opted_out:
            return Decision(Action.NONE, "already_stopped", state)
        return Decision(Action.STOPPED, "stop", replace(state, opted_out=True), STOP_TEXT)

    if command == "start" and state.opted_out:
        state = replace(state, opted_out=False)
        if _capped(state, policy):
            return Decision(Action.NONE, "daily_cap", state)
        return Decision(Action.STARTED, "start", _counted(state), START_TEXT)

    if state.opted_out:
        return Decision(Action.NONE, "opted_out", state)

    if command == "help":
        if _capped(state, policy):
            return Decision(Action.NONE, "daily_cap", state)
        return Decision(Action.HELP, "help", _counted(state), HELP_TEXT)

    # "start" from a user who never stopped is simply a request for a fact.
    if command is None and policy.trigger is not None and not policy.trigger.search(text):
        return Decision(Action.NONE, "no_trigger", state)

    if state.last_fact_at is not None and now - state.last_fact_at < policy.cooldown_seconds:
        return Decision(Action.NONE, "cooldown", state)

    if _capped(state, policy):
        return Decision(Action.NONE, "daily_cap", state)

    return Decision(Action.FACT, "fact", _counted(replace(state, last_fact_at=now)))


def _roll_day(state: UserState, now: float) -> UserState:
    today = utc_day(now)
    if state.day != today:
        return replace(state, day=today, replies_today=0)
    return state


def _capped(state: UserState, policy: Policy) -> bool:
    return state.replies_today >= policy.daily_cap


def _counted(state: UserState) -> UserState:
    return replace(state, replies_today=state.replies_today + 1)


def render(decision: Decision, fact_text: str | None, policy: Policy) -> str:
    """The text to send for a replying decision, with the configured suffix."""
    if decision.action is Action.FACT:
        if fact_text is None:
            raise ValueError("a FACT decision needs the fact's text")
        body = fact_text
    elif decision.text is not None:
        body = decision.text
    else:
        raise ValueError(f"decision {decision.action.value} has no reply")
    text = body + policy.reply_suffix
    return text[:MAX_DM_CHARS]


def fact_length_budget(policy: Policy) -> int:
    """The longest fact that still fits in one tweet-sized reply with the suffix."""
    return max(40, 280 - len(policy.reply_suffix))
