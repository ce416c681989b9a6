"""What to answer: a pure function of the message, the user's state and the clock.

No I/O here. The outbox loads the state, calls `decide`, fetches a fact when the decision
asks for one, sends, and persists `Decision.state`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Final

from catbot.models import UserState
from catbot.textfit import (
    MAX_DM_CHARS,
    MAX_POST_WEIGHT,
    Channel,
    fit_reply,
    post_weight,
)

if TYPE_CHECKING:
    from catbot.config import Settings

# The languages the bot speaks: English and Chinese (Simplified).
LANGUAGES: Final = ("en", "zh")
DEFAULT_LANGUAGE: Final = "en"

HELP_TEXT = (
    "I'm catbot: send me any message and I'll answer with a cat fact. "
    "Commands: HELP (this message), STOP (no more facts), START (facts again)."
)
STOP_TEXT = "You won't get any more cat facts. Send START whenever you miss them."
START_TEXT = "Welcome back! Cat facts are on again. Send STOP to pause them."

HELP_TEXT_ZH = (
    "我是 catbot：随便给我发一条消息，我就回你一条关于猫的小知识。"
    "指令：帮助（查看这条说明）、停止（不再接收）、开始（重新接收）。"
)
STOP_TEXT_ZH = "好的，以后不再给你发猫咪知识了。想念它们的时候，随时发送“开始”。"
START_TEXT_ZH = "欢迎回来！猫咪知识已重新开启。想暂停的话，发送“停止”就好。"

# The reply to each command, by language: TEXTS[language][command].
TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {"help": HELP_TEXT, "stop": STOP_TEXT, "start": START_TEXT},
    "zh": {"help": HELP_TEXT_ZH, "stop": STOP_TEXT_ZH, "start": START_TEXT_ZH},
}

# Whole-message commands in both languages, each with the language it is answered in
# (unless a language is pinned); both sets work whatever the setting.
_COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("help", "en"),
    "?": ("help", "en"),
    "commands": ("help", "en"),
    "stop": ("stop", "en"),
    "unsubscribe": ("stop", "en"),
    "quit": ("stop", "en"),
    "start": ("start", "en"),
    "unstop": ("start", "en"),
    "subscribe": ("start", "en"),
    "帮助": ("help", "zh"),
    "？": ("help", "zh"),
    "指令": ("help", "zh"),
    "命令": ("help", "zh"),
    "停止": ("stop", "zh"),
    "退订": ("stop", "zh"),
    "取消订阅": ("stop", "zh"),
    "开始": ("start", "zh"),
    "订阅": ("start", "zh"),
    "恢复": ("start", "zh"),
}
# Trailing punctuation a command may carry, ASCII and full-width (。！？).
_TRAILING = re.compile(r"[\s!.?。！？]+$")


class Action(Enum):
    FACT = "fact"
    HELP = "help"
    STOPPED = "stopped"
    STARTED = "started"
    NONE = "none"


@dataclass(frozen=True)
class Policy:
    cooldown_seconds: float = 10.0
    daily_cap: int = 50
    trigger: re.Pattern[str] | None = None
    reply_suffix: str = ""
    # None: answer in the language of each message; "en" or "zh": always that language.
    language: str | None = None

    def __post_init__(self) -> None:
        if self.language is not None and self.language not in LANGUAGES:
            raise ValueError(f"unknown language {self.language!r}; expected one of {LANGUAGES}")

    @classmethod
    def build(
        cls,
        cooldown_seconds: float,
        daily_cap: int,
        trigger: str | None,
        reply_suffix: str,
        language: str | None = None,
    ) -> Policy:
        """`language` is the setting: "auto" (or None) follows the message, else pins."""
        pattern = re.compile(trigger, re.IGNORECASE) if trigger else None
        pinned = None if language in (None, "auto") else language
        return cls(cooldown_seconds, daily_cap, pattern, reply_suffix, pinned)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls.build(settings.cooldown_seconds, settings.daily_cap, settings.trigger,
                         settings.reply_suffix, language=settings.language)


@dataclass(frozen=True)
class Decision:
    action: Action
    # Bounded label for metrics and logs: why this action (never user text).
    reason: str
    state: UserState
    # The full reply for commands; None for FACT (the caller supplies the fact) and NONE.
    text: str | None = None
    # The reply's language ("en" or "zh"): the command texts' and the fact's.
    language: str = DEFAULT_LANGUAGE

    @property
    def replies(self) -> bool:
        return self.action is not Action.NONE


def command_of(text: str) -> str | None:
    """`help`, `stop` or `start` when the whole message is that command, else None.

    English (help, stop, start, ...) and Chinese (帮助, 停止, 开始, ...) alike; case,
    surrounding whitespace and trailing punctuation (also full-width 。！？) are ignored.
    """
    found = _command(text)
    return found[0] if found else None


def _command(text: str) -> tuple[str, str] | None:
    """(command, its language) when the whole message is a command."""
    word = _TRAILING.sub("", text.strip().lower()) or text.strip()
    return _COMMANDS.get(word)


def _is_han(char: str) -> bool:
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= code <= 0x4DBF  # Extension A
        or 0x20000 <= code <= 0x3134F  # Extensions B to G
        or 0xF900 <= code <= 0xFAFF  # Compatibility Ideographs
    )


def _is_latin_letter(char: str) -> bool:
    if char.isascii():
        return char.isalpha()
    return char.isalpha() and unicodedata.name(char, "").startswith("LATIN ")


def detect_language(text: str) -> str:
    """"zh" when most of the message's letters are Chinese characters, else "en".

    Counts CJK ideographs against Latin letters; digits, punctuation, emoji and other
    scripts do not vote, and a message with neither (empty, emoji only) is English.
    """
    han = latin = 0
    for char in text:
        if _is_han(char):
            han += 1
        elif _is_latin_letter(char):
            latin += 1
    return "zh" if han > latin else "en"


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def decide(text: str, state: UserState, now: float, policy: Policy) -> Decision:
    """Decide the reply to one DM.

    Commands are answered even during the cooldown, so a user can always learn how to stop
    the bot; STOP is confirmed once and never counted against the daily cap, because an
    opt-out must work even for a user who has used up their replies.

    The reply's language (`Decision.language`) is the policy's pinned one, else the
    command's (帮助 is answered in Chinese, help in English), else the message's.
    """
    state = _roll_day(state, now)
    found = _command(text)
    command = found[0] if found else None
    lang = policy.language or (found[1] if found else detect_language(text))
    texts = TEXTS[lang]

    def none(reason: str, new_state: UserState) -> Decision:
        return Decision(Action.NONE, reason, new_state, language=lang)

    if command == "stop":
        if state.opted_out:
            return none("already_stopped", state)
        return Decision(Action.STOPPED, "stop", replace(state, opted_out=True), texts["stop"],
                        lang)

    if command == "start" and state.opted_out:
        state = replace(state, opted_out=False)
        if _capped(state, policy):
            return none("daily_cap", state)
        return Decision(Action.STARTED, "start", _counted(state), texts["start"], lang)

    if state.opted_out:
        return none("opted_out", state)

    if command == "help":
        if _capped(state, policy):
            return none("daily_cap", state)
        return Decision(Action.HELP, "help", _counted(state), texts["help"], lang)

    # "start" from a user who never stopped is simply a request for a fact.
    if command is None and policy.trigger is not None and not policy.trigger.search(text):
        return none("no_trigger", state)

    if state.last_fact_at is not None and now - state.last_fact_at < policy.cooldown_seconds:
        return none("cooldown", state)

    if _capped(state, policy):
        return none("daily_cap", state)

    return Decision(Action.FACT, "fact", _counted(replace(state, last_fact_at=now)),
                    language=lang)


def _roll_day(state: UserState, now: float) -> UserState:
    today = utc_day(now)
    if state.day != today:
        return replace(state, day=today, replies_today=0)
    return state


def _capped(state: UserState, policy: Policy) -> bool:
    return state.replies_today >= policy.daily_cap


def _counted(state: UserState) -> UserState:
    return replace(state, replies_today=state.replies_today + 1)


_COMMAND_OF_ACTION = {Action.HELP: "help", Action.STOPPED: "stop", Action.STARTED: "start"}


def render(
    decision: Decision, fact_text: str | None, policy: Policy, channel: Channel = "dm"
) -> str:
    """The text to send for a replying decision on `channel`, with the configured suffix.

    Never longer than X takes on that channel (see `catbot.textfit`): the suffix is
    shortened or dropped first, and only a body that cannot fit alone is cut short.
    """
    if decision.action is Action.FACT:
        if fact_text is None:
            raise ValueError("a FACT decision needs the fact's text")
        body = fact_text
    elif decision.text is not None:
        body = decision.text
    elif decision.action in _COMMAND_OF_ACTION:
        # A command decision built without its text: the standard one, in its language.
        texts = TEXTS.get(decision.language, TEXTS[DEFAULT_LANGUAGE])
        body = texts[_COMMAND_OF_ACTION[decision.action]]
    else:
        raise ValueError(f"decision {decision.action.value} has no reply")
    return fit_reply(body, policy.reply_suffix, channel)


def fact_length_budget(policy: Policy, channel: Channel = "dm") -> int:
    """The longest fact that fits beside the whole suffix in one reply on `channel`.

    For posts it is a weighted length, as X counts posts; for DMs a count of characters.
    The fact source prefers unseen facts within it and otherwise takes a longer one, whose
    reply then carries a shortened suffix or none.
    """
    if channel == "post":
        return max(0, MAX_POST_WEIGHT - post_weight(policy.reply_suffix))
    return max(0, MAX_DM_CHARS - len(policy.reply_suffix))
