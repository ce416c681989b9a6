"""The pure reply decision: facts, commands, opt-out, cooldown, daily cap, trigger, render."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twitter_text import parse_tweet

from catbot.brain import (
    HELP_TEXT,
    MAX_DM_CHARS,
    START_TEXT,
    STOP_TEXT,
    Action,
    Decision,
    Policy,
    command_of,
    decide,
    fact_length_budget,
    render,
    utc_day,
)
from catbot.facts import load_corpus
from catbot.models import UserState
from catbot.textfit import _ELLIPSIS

# 2025-06-15 12:00:00 UTC, computed rather than hard-coded as an epoch number.
NOON = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()
DAY = utc_day(NOON)
POLICY = Policy.build(cooldown_seconds=10.0, daily_cap=5, trigger=None, reply_suffix="")


def user(**kwargs: object) -> UserState:
    return UserState("42", **kwargs)  # type: ignore[arg-type]


def run(texts: list[str], state: UserState, start: float, step: float, policy: Policy) -> list:
    """Feed a conversation, threading the state through, one message every `step` s."""
    decisions = []
    now = start
    for text in texts:
        decision = decide(text, state, now, policy)
        decisions.append(decision)
        state = decision.state
        now += step
    return decisions


# utc_day ----------------------------------------------------------------------------------


def test_utc_day_is_utc_calendar_day() -> None:
    assert DAY == "2025-06-15"
    midnight = datetime(2025, 6, 16, tzinfo=UTC).timestamp()
    assert utc_day(midnight - 0.001) == "2025-06-15"
    assert utc_day(midnight) == "2025-06-16"


# Facts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["hi", "hello there", "", "   ", "🐱", "stop it please", "x" * 5000]
)
def test_any_message_gets_a_fact(text: str) -> None:
    decision = decide(text, user(), NOON, POLICY)
    assert decision.action is Action.FACT
    assert decision.reason == "fact"
    assert decision.text is None
    assert decision.replies
    assert decision.state.last_fact_at == NOON
    assert decision.state.replies_today == 1
    assert decision.state.day == DAY
    assert decision.state.user_id == "42"


def test_decide_does_not_touch_unrelated_state() -> None:
    state = user(seen_facts=frozenset({"a", "b"}))
    decision = decide("hi", state, NOON, POLICY)
    assert decision.state.seen_facts == frozenset({"a", "b"})
    assert decision.state.opted_out is False
    assert state.last_fact_at is None  # the input state is not mutated (frozen)


# Commands ---------------------------------------------------------------------------------

HELP_WORDS = ["help", "HELP", "Help", "?", "commands", " help ", "help!", "help.", "HELP?!",
              "help \n", "\thelp!!"]
STOP_WORDS = ["stop", "STOP", "Stop", "stop!", "STOP.", " stop ", "unsubscribe", "QUIT",
              "stop\n", "stop ?!"]
START_WORDS = ["start", "START", "Start!", " start. ", "unstop", "SUBSCRIBE", "start\n"]


@pytest.mark.parametrize("text", HELP_WORDS)
def test_help_variants(text: str) -> None:
    assert command_of(text) == "help"
    decision = decide(text, user(), NOON, POLICY)
    assert decision.action is Action.HELP
    assert decision.text == HELP_TEXT
    assert decision.state.replies_today == 1
    assert decision.state.last_fact_at is None  # help does not start the fact cooldown


@pytest.mark.parametrize("text", STOP_WORDS)
def test_stop_variants(text: str) -> None:
    assert command_of(text) == "stop"
    decision = decide(text, user(), NOON, POLICY)
    assert decision.action is Action.STOPPED
    assert decision.reason == "stop"
    assert decision.text == STOP_TEXT
    assert decision.state.opted_out is True


@pytest.mark.parametrize("text", START_WORDS)
def test_start_variants(text: str) -> None:
    assert command_of(text) == "start"
    decision = decide(text, user(opted_out=True), NOON, POLICY)
    assert decision.action is Action.STARTED
    assert decision.reason == "start"
    assert decision.text == START_TEXT
    assert decision.state.opted_out is False


@pytest.mark.parametrize(
    "text", ["please stop", "stop sending", "helpful", "starting", "s t o p", "stopp", "¿stop",
             "help me", "!help"]
)
def test_non_commands(text: str) -> None:
    assert command_of(text) is None
    assert decide(text, user(), NOON, POLICY).action is Action.FACT


def test_stop_confirmed_once() -> None:
    first = decide("STOP", user(), NOON, POLICY)
    assert first.action is Action.STOPPED
    second = decide("stop", first.state, NOON + 100, POLICY)
    assert second.action is Action.NONE
    assert second.reason == "already_stopped"
    assert not second.replies
    assert second.text is None
    assert second.state.opted_out is True


def test_stop_does_not_count_against_cap() -> None:
    decision = decide("stop", user(), NOON, POLICY)
    assert decision.state.replies_today == 0


def test_opted_out_user_gets_nothing_for_normal_messages_and_help() -> None:
    stopped = decide("stop", user(), NOON, POLICY).state
    for i, text in enumerate(["hi", "cat facts please", "help", "HELP!", "?", ""]):
        decision = decide(text, stopped, NOON + 1000 * (i + 1), POLICY)
        assert decision.action is Action.NONE, text
        assert decision.reason == "opted_out"
        assert decision.state.opted_out is True
        assert decision.state.replies_today == 0


def test_start_opts_back_in_and_then_facts_flow() -> None:
    stopped = decide("stop", user(), NOON, POLICY).state
    started = decide("start", stopped, NOON + 1, POLICY)
    assert started.action is Action.STARTED
    assert started.state.opted_out is False
    assert started.state.replies_today == 1
    after = decide("hi", started.state, NOON + 2, POLICY)
    assert after.action is Action.FACT


def test_opt_out_persists_across_days() -> None:
    stopped = decide("stop", user(), NOON, POLICY).state
    later = NOON + 7 * 86400
    decision = decide("hi", stopped, later, POLICY)
    assert decision.action is Action.NONE
    assert decision.reason == "opted_out"
    assert decision.state.day == utc_day(later)


def test_start_from_subscribed_user_is_a_fact_request() -> None:
    decision = decide("start", user(), NOON, POLICY)
    assert decision.action is Action.FACT
    # ... and as a fact request it obeys the cooldown.
    again = decide("start", decision.state, NOON + 1, POLICY)
    assert again.action is Action.NONE
    assert again.reason == "cooldown"


# Cooldown ---------------------------------------------------------------------------------


def test_fact_within_cooldown_is_suppressed_and_after_is_sent() -> None:
    first = decide("hi", user(), NOON, POLICY)
    assert first.action is Action.FACT
    within = decide("hi", first.state, NOON + POLICY.cooldown_seconds - 0.5, POLICY)
    assert within.action is Action.NONE
    assert within.reason == "cooldown"
    assert within.state == first.state  # nothing counted, cooldown not extended
    boundary = decide("hi", first.state, NOON + POLICY.cooldown_seconds, POLICY)
    assert boundary.action is Action.FACT
    after = decide("hi", first.state, NOON + POLICY.cooldown_seconds + 5, POLICY)
    assert after.action is Action.FACT
    assert after.state.replies_today == 2


def test_commands_ignore_cooldown() -> None:
    first = decide("hi", user(), NOON, POLICY)
    helped = decide("help", first.state, NOON + 1, POLICY)
    assert helped.action is Action.HELP
    stopped = decide("stop", helped.state, NOON + 2, POLICY)
    assert stopped.action is Action.STOPPED
    started = decide("start", stopped.state, NOON + 3, POLICY)
    assert started.action is Action.STARTED


def test_zero_cooldown() -> None:
    policy = Policy.build(0.0, 100, None, "")
    decisions = run(["a"] * 5, user(), NOON, 0.0, policy)
    assert [d.action for d in decisions] == [Action.FACT] * 5


# Daily cap ---------------------------------------------------------------------------------


def test_daily_cap_counts_replies() -> None:
    policy = Policy.build(cooldown_seconds=0.0, daily_cap=3, trigger=None, reply_suffix="")
    decisions = run(["hi", "help", "hi", "hi", "help"], user(), NOON, 1.0, policy)
    assert [d.action for d in decisions] == [
        Action.FACT, Action.HELP, Action.FACT, Action.NONE, Action.NONE,
    ]
    assert [d.reason for d in decisions[3:]] == ["daily_cap", "daily_cap"]
    assert decisions[-1].state.replies_today == 3


def test_daily_cap_resets_on_new_utc_day() -> None:
    policy = Policy.build(cooldown_seconds=0.0, daily_cap=2, trigger=None, reply_suffix="")
    before_midnight = datetime(2025, 6, 15, 23, 59, 58, tzinfo=UTC).timestamp()
    decisions = run(["a", "b", "c"], user(), before_midnight, 0.5, policy)
    assert [d.action for d in decisions] == [Action.FACT, Action.FACT, Action.NONE]
    capped = decisions[-1].state
    after_midnight = datetime(2025, 6, 16, 0, 0, 1, tzinfo=UTC).timestamp()
    fresh = decide("d", capped, after_midnight, policy)
    assert fresh.action is Action.FACT
    assert fresh.state.day == "2025-06-16"
    assert fresh.state.replies_today == 1


def test_day_rolls_even_without_reply() -> None:
    state = user(day="2000-01-01", replies_today=999, opted_out=True)
    decision = decide("hi", state, NOON, POLICY)
    assert decision.action is Action.NONE
    assert decision.state.day == DAY
    assert decision.state.replies_today == 0


def test_stop_works_when_capped() -> None:
    capped = user(day=DAY, replies_today=POLICY.daily_cap, last_fact_at=NOON - 1)
    assert decide("hi", capped, NOON, POLICY).reason in {"daily_cap", "cooldown"}
    assert decide("help", capped, NOON, POLICY).reason == "daily_cap"
    stopped = decide("STOP", capped, NOON, POLICY)
    assert stopped.action is Action.STOPPED
    assert stopped.state.opted_out is True
    assert stopped.state.replies_today == POLICY.daily_cap


def test_start_when_capped_opts_in_silently() -> None:
    capped = user(day=DAY, replies_today=POLICY.daily_cap, opted_out=True)
    decision = decide("start", capped, NOON, POLICY)
    assert decision.action is Action.NONE
    assert decision.reason == "daily_cap"
    assert decision.state.opted_out is False


def test_cap_reached_exactly_at_limit() -> None:
    almost = user(day=DAY, replies_today=POLICY.daily_cap - 1)
    assert decide("hi", almost, NOON, POLICY).action is Action.FACT
    full = user(day=DAY, replies_today=POLICY.daily_cap)
    assert decide("hi", full, NOON, POLICY).reason == "daily_cap"


# Trigger ----------------------------------------------------------------------------------

TRIGGER = Policy.build(cooldown_seconds=0.0, daily_cap=50, trigger="send me cat facts",
                       reply_suffix="")


@pytest.mark.parametrize(
    "text", ["send me cat facts", "SEND ME CAT FACTS", "please Send Me Cat Facts now!"]
)
def test_trigger_matches_case_insensitively(text: str) -> None:
    assert decide(text, user(), NOON, TRIGGER).action is Action.FACT


@pytest.mark.parametrize("text", ["hi", "send me dog facts", "cat facts", ""])
def test_trigger_not_matching(text: str) -> None:
    decision = decide(text, user(), NOON, TRIGGER)
    assert decision.action is Action.NONE
    assert decision.reason == "no_trigger"
    assert decision.state.replies_today == 0


def test_commands_bypass_trigger() -> None:
    assert decide("help", user(), NOON, TRIGGER).action is Action.HELP
    stopped = decide("stop", user(), NOON, TRIGGER)
    assert stopped.action is Action.STOPPED
    assert decide("start", stopped.state, NOON, TRIGGER).action is Action.STARTED


def test_trigger_is_a_search_with_regex_features() -> None:
    policy = Policy.build(0.0, 50, r"\bcat(s)?\b", "")
    assert decide("I like CATS", user(), NOON, policy).action is Action.FACT
    assert decide("concatenate", user(), NOON, policy).action is Action.NONE


def test_policy_build() -> None:
    policy = Policy.build(3.0, 7, "abc", " #cats")
    assert policy.cooldown_seconds == 3.0
    assert policy.daily_cap == 7
    assert policy.trigger is not None
    assert policy.trigger.search("xxABCxx")
    assert policy.reply_suffix == " #cats"
    assert Policy.build(3.0, 7, None, "").trigger is None
    assert Policy.build(3.0, 7, "", "").trigger is None


# render -----------------------------------------------------------------------------------


def test_render_fact_appends_suffix() -> None:
    policy = Policy.build(10.0, 5, None, " — catbot")
    decision = decide("hi", user(), NOON, policy)
    assert render(decision, "Cats sleep a lot.", policy) == "Cats sleep a lot." + " — catbot"


def test_render_fact_requires_fact_text() -> None:
    decision = decide("hi", user(), NOON, POLICY)
    with pytest.raises(ValueError):
        render(decision, None, POLICY)


def test_render_command_uses_its_text_and_suffix() -> None:
    policy = Policy.build(10.0, 5, None, " [bot]")
    decision = decide("help", user(), NOON, policy)
    assert render(decision, None, policy) == HELP_TEXT + " [bot]"
    # A fact passed for a command decision is not used.
    assert render(decision, "ignored fact", policy) == HELP_TEXT + " [bot]"
    stop = decide("stop", user(), NOON, policy)
    assert render(stop, None, policy) == STOP_TEXT + " [bot]"


def test_render_none_decision_raises() -> None:
    decision = Decision(Action.NONE, "cooldown", user())
    with pytest.raises(ValueError):
        render(decision, "fact", POLICY)


def test_render_cuts_a_body_over_the_dm_limit() -> None:
    policy = Policy.build(10.0, 5, None, "!" * 50)
    decision = decide("hi", user(), NOON, policy)
    text = render(decision, "a" * (MAX_DM_CHARS + 10), policy)
    assert len(text) == MAX_DM_CHARS
    assert text == "a" * (MAX_DM_CHARS - len(_ELLIPSIS)) + _ELLIPSIS


def test_fact_length_budget() -> None:
    assert fact_length_budget(POLICY) == MAX_DM_CHARS
    assert fact_length_budget(POLICY, "post") == 280
    suffix = " — sent by catbot 🐱 https://example.com/a/very/long/path/to/more/cat/facts"
    weight = parse_tweet(suffix).weightedLength
    assert weight < len(suffix)  # the URL counts 23, the emoji 2
    assert fact_length_budget(Policy.build(1, 1, None, suffix), "post") == 280 - weight
    assert fact_length_budget(Policy.build(1, 1, None, suffix)) == MAX_DM_CHARS - len(suffix)
    assert fact_length_budget(Policy.build(1, 1, None, "猫" * 140), "post") == 0
    assert fact_length_budget(Policy.build(1, 1, None, "x" * 20_000)) == 0


def test_replies_property() -> None:
    for action in Action:
        assert Decision(action, "r", user()).replies == (action is not Action.NONE)


# Properties -------------------------------------------------------------------------------

day_strings = st.one_of(st.just(""), st.just(DAY), st.text(max_size=12),
                        st.dates().map(lambda d: d.isoformat()))
states = st.builds(
    UserState,
    user_id=st.text(min_size=1, max_size=20),
    opted_out=st.booleans(),
    last_fact_at=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    day=day_strings,
    replies_today=st.integers(min_value=-10, max_value=10**6),
    seen_facts=st.frozensets(st.text(max_size=5), max_size=5),
)
policies = st.builds(
    Policy.build,
    cooldown_seconds=st.floats(min_value=0, max_value=1e6),
    daily_cap=st.integers(min_value=0, max_value=100),
    trigger=st.one_of(st.none(), st.sampled_from(["cat", r"send me cat facts", r"^\d+$", "."])),
    reply_suffix=st.text(max_size=30),
)
texts = st.one_of(
    st.text(),
    st.sampled_from(HELP_WORDS + STOP_WORDS + START_WORDS),
    st.builds(lambda w, p: w + p, st.sampled_from(["stop", "START", "help"]),
              st.text(alphabet=" \t\n!.?", max_size=5)),
)
# Between 1970 and 2200: any instant a real clock can give.
nows = st.floats(min_value=0, max_value=(datetime(2200, 1, 1, tzinfo=UTC)).timestamp())


@given(text=texts, state=states, now=nows, policy=policies)
@settings(max_examples=500, deadline=None)
def test_decide_never_raises_and_respects_opt_out(
    text: str, state: UserState, now: float, policy: Policy
) -> None:
    decision = decide(text, state, now, policy)
    assert isinstance(decision, Decision)
    assert decision.state.user_id == state.user_id
    assert decision.state.seen_facts == state.seen_facts
    assert decision.state.day == utc_day(now)
    if state.opted_out and command_of(text) != "start":
        assert decision.action is Action.NONE
        assert not decision.replies
    if decision.action is Action.NONE:
        assert decision.text is None
    elif decision.action is Action.FACT:
        assert decision.text is None
        assert decision.state.last_fact_at == now
        assert render(decision, "fact", policy).startswith("fact")
    else:
        assert decision.text is not None
        render(decision, None, policy)
    # STOP always ends with the user opted out; START with them opted in.
    if command_of(text) == "stop":
        assert decision.state.opted_out
        assert decision.action in {Action.STOPPED, Action.NONE}
    if command_of(text) == "start":
        assert not decision.state.opted_out


@given(text=st.text(), now=nows)
@settings(max_examples=200, deadline=None)
def test_stopped_user_never_gets_a_reply_except_start(text: str, now: float) -> None:
    stopped = decide("stop", user(), now, POLICY).state
    decision = decide(text, stopped, now, POLICY)
    if command_of(text) == "start":
        assert decision.action is Action.STARTED
    else:
        assert decision.action is Action.NONE


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["hi", "help", "stop", "start", "cat?"]),
                  st.floats(min_value=0, max_value=20_000)),
        max_size=40,
    )
)
@settings(max_examples=200, deadline=None)
def test_conversation_invariants(steps: list[tuple[str, float]]) -> None:
    policy = Policy.build(cooldown_seconds=30.0, daily_cap=4, trigger=None, reply_suffix="")
    state = user()
    now = NOON
    counted: dict[str, int] = {}
    last_fact: float | None = None
    for text, gap in steps:
        now += gap
        decision = decide(text, state, now, policy)
        day = utc_day(now)
        if decision.action in {Action.FACT, Action.HELP, Action.STARTED}:
            counted[day] = counted.get(day, 0) + 1
        if decision.action is Action.FACT:
            assert last_fact is None or now - last_fact >= policy.cooldown_seconds
            last_fact = now
        assert counted.get(day, 0) <= policy.daily_cap
        assert decision.state.replies_today == counted.get(day, 0)
        state = decision.state


@given(suffix=st.text(max_size=400))
def test_fact_length_budget_property(suffix: str) -> None:
    policy = Policy.build(1, 1, None, suffix)
    assert fact_length_budget(policy, "post") == max(0, 280 - parse_tweet(suffix).weightedLength)
    assert fact_length_budget(policy, "dm") == MAX_DM_CHARS - len(suffix)


# Replies that fit (issue 14) ----------------------------------------------------------------

# Ordinary words: enough of them to make a suffix of any length up to 150 characters.
SUFFIX_150 = (" — more cat facts every day from catbot, your friendly feline bot" * 3)[:150]


def x_takes_post(text: str) -> bool:
    """What X's counting library says of a post (docs.x.com/fundamentals/counting-characters)."""
    result = parse_tweet(text)
    return bool(result.valid) and result.weightedLength <= 280


def test_help_with_a_150_character_suffix_fits_a_post() -> None:
    assert len(SUFFIX_150) == 150
    policy = Policy.build(10.0, 5, None, SUFFIX_150)
    decision = decide("help", user(), NOON, policy)
    assert not x_takes_post(HELP_TEXT + SUFFIX_150)  # what was sent before, and refused
    text = render(decision, None, policy, "post")
    assert x_takes_post(text)
    assert text.startswith(HELP_TEXT)
    kept = text[len(HELP_TEXT):]
    # The suffix is cut back by whole words, and no further than it has to be.
    assert kept and SUFFIX_150.startswith(kept)
    next_word = SUFFIX_150[len(kept):].split(" ", 2)[:2]
    assert not x_takes_post(text + " ".join(next_word))
    # A DM has room for all of it.
    assert render(decision, None, policy, "dm") == HELP_TEXT + SUFFIX_150


def test_a_url_in_the_suffix_is_kept_whole_or_dropped() -> None:
    url = "https://example.com/" + "cats/" * 40
    policy = Policy.build(10.0, 5, None, " more: " + url + " 🐱")
    decision = decide("hi", user(), NOON, policy)
    # X counts the URL 23 whatever its length: a 240-weight fact leaves room for it...
    fact = "a" * 240
    assert render(decision, fact, policy, "post") == fact + " more: " + url + " 🐱"
    # ...and a 260-weight fact does not: the URL goes, never a piece of it.
    fact = "a" * 260
    text = render(decision, fact, policy, "post")
    assert x_takes_post(text) and text == fact + " more:"


def test_a_body_too_long_for_a_post_is_cut_with_an_ellipsis() -> None:
    policy = Policy.build(10.0, 5, None, " #cats")
    decision = decide("猫", user(), NOON, policy)
    cat, dot = parse_tweet("猫").weightedLength, parse_tweet(_ELLIPSIS).weightedLength
    text = render(decision, "猫" * 200, policy, "post")
    assert text == "猫" * ((280 - dot) // cat) + _ELLIPSIS
    assert x_takes_post(text)
    # Words are cut at a space when one is near.
    text = render(decision, "purr " * 100, policy, "post")
    assert x_takes_post(text) and text.endswith("purr" + _ELLIPSIS)
    assert parse_tweet(text).weightedLength > 270


def test_characters_x_refuses_in_a_post_drop_the_suffix() -> None:
    policy = Policy.build(10.0, 5, None, " #cats \ufeff")
    decision = decide("hi", user(), NOON, policy)
    assert render(decision, "Cats purr.", policy, "post") == "Cats purr. #cats"
    assert render(decision, "Cats purr.", policy, "dm") == "Cats purr. #cats \ufeff"


CORPUS_TEXTS = [f.text for lang in ("en", "zh") for f in load_corpus(lang)]
SUFFIX_PIECES = [" ", "—", "#catfacts", "https://example.com/cats", "example.org", "猫咪知识",
                 "🐱", "👨\u200d👩\u200d👧\u200d👦", "@catbot", "\n", "\ufffe", "café", "e\u0301"]
suffixes = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(SUFFIX_PIECES), max_size=80).map("".join),
    st.integers(min_value=0, max_value=400).map(lambda n: (" purr" * 80)[:n]),
)
# (message, whether the user had stopped): facts, help, stop and start in both languages.
messages = st.sampled_from([("hi", False), ("猫", False), ("help", False), ("帮助", False),
                            ("stop", False), ("停止", False), ("start", True), ("开始", True)])
facts = st.one_of(st.sampled_from(CORPUS_TEXTS), st.text(min_size=1, max_size=400))


@given(suffix=suffixes, message=messages, fact=facts, language=st.sampled_from([None, "en", "zh"]))
@settings(max_examples=400, deadline=None)
def test_every_public_reply_is_a_post_x_takes(
    suffix: str, message: tuple[str, bool], fact: str, language: str | None
) -> None:
    policy = Policy.build(10.0, 5, None, suffix, language=language)
    text, stopped = message
    decision = decide(text, user(opted_out=stopped), NOON, policy)
    assert decision.replies
    body = fact if decision.action is Action.FACT else decision.text
    assert body is not None
    reply = render(decision, fact, policy, "post")
    assert x_takes_post(reply)
    if x_takes_post(body + suffix):
        assert reply == body + suffix
    elif x_takes_post(body):
        assert reply.startswith(body) and suffix.startswith(reply[len(body):])
    else:
        assert reply.endswith(_ELLIPSIS)


@given(suffix=st.one_of(suffixes, st.integers(9_000, 11_000).map(lambda n: "x " * (n // 2))),
       message=messages, fact=st.one_of(facts, st.integers(9_990, 10_010).map("m".__mul__)))
@settings(max_examples=200, deadline=None)
def test_every_dm_reply_is_within_x_dm_limit(
    suffix: str, message: tuple[str, bool], fact: str
) -> None:
    policy = Policy.build(10.0, 5, None, suffix)
    text, stopped = message
    decision = decide(text, user(opted_out=stopped), NOON, policy)
    body = fact if decision.action is Action.FACT else decision.text
    assert body is not None
    reply = render(decision, fact, policy, "dm")
    assert 0 < len(reply) <= MAX_DM_CHARS
    if len(body + suffix) <= MAX_DM_CHARS:
        assert reply == body + suffix
    elif len(body) <= MAX_DM_CHARS:
        assert reply.startswith(body) and suffix.startswith(reply[len(body):])
    else:
        assert reply.endswith(_ELLIPSIS)


def test_state_replace_keeps_frozen_semantics() -> None:
    state = user()
    with pytest.raises(AttributeError):
        state.opted_out = True  # type: ignore[misc]
    assert replace(state, opted_out=True).opted_out


def test_cooldown_uses_time_since_last_fact_not_last_message() -> None:
    # Messages inside the cooldown do not push it further out.
    policy = Policy.build(cooldown_seconds=10.0, daily_cap=50, trigger=None, reply_suffix="")
    first = decide("a", user(), NOON, policy)
    blocked = decide("b", first.state, NOON + 9, policy)
    assert blocked.reason == "cooldown"
    allowed = decide("c", blocked.state, NOON + timedelta(seconds=10).total_seconds(), policy)
    assert allowed.action is Action.FACT
