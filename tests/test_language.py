"""Languages: the reply follows the friend's language (English or Chinese) unless pinned.

Covers the choice of language, both command sets, the Chinese corpus, no repeats per user
per language, the `CATBOT_LANGUAGE` setting, and the whole loop through the real daemon
and the X emulator.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import catbot.facts
from catbot.brain import (
    HELP_TEXT,
    LANGUAGES,
    START_TEXT,
    STOP_TEXT,
    TEXTS,
    Action,
    Decision,
    Policy,
    command_of,
    decide,
    detect_language,
    render,
)
from catbot.config import ConfigError, load_settings
from catbot.facts import CorpusSource, load_corpus
from catbot.facts.corpus import _CORPUS_FILES, _pick_unseen, fact_id
from catbot.models import UserState
from testkit.processes import BotAndX, Daemon, Emulator, free_port, wait_for

NOON = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()
AUTO = Policy.build(cooldown_seconds=0.0, daily_cap=10_000, trigger=None, reply_suffix="")
PIN_EN = Policy.build(0.0, 10_000, None, "", language="en")
PIN_ZH = Policy.build(0.0, 10_000, None, "", language="zh")
ZH_FILE = Path(catbot.facts.__file__).parent / "corpus_zh.txt"


def user(**kwargs: object) -> UserState:
    return UserState("42", **kwargs)  # type: ignore[arg-type]


# --- detect_language ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "请给我讲一个关于猫的知识",
        "猫",
        "你好！",
        "我今天很开心 ok",  # 6 ideographs against 2 Latin letters
        "猫咪 123 456 789 !!!",  # digits and punctuation do not vote
        "🐱🐱 喵喵喵",  # nor do emoji
        "  你好，猫咪。  ",
        "給我一個貓的知識",  # Traditional characters are CJK ideographs too
    ],
)
def test_mostly_chinese_is_chinese(text: str) -> None:
    assert detect_language(text) == "zh"


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "send me cat facts",
        "I love 猫",  # 5 Latin letters against 1 ideograph
        "我喜欢cats",  # 3 against 4: not mostly Chinese
        "ab猫狗",  # a tie is not a majority
        "",
        "   ",
        "🐱",
        "🐱🐾😺",
        "12345 !!! ???",
        "。！？",
        "café crème",  # accented Latin letters count as Latin
        "こんにちは",  # kana are not Chinese characters
        "안녕하세요",
        "привет",
    ],
)
def test_otherwise_english(text: str) -> None:
    assert detect_language(text) == "en"


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_detect_language_is_total(text: str) -> None:
    assert detect_language(text) in LANGUAGES


@given(han=st.text(alphabet="猫狗鱼鸟你好吗", min_size=1, max_size=30),
       latin=st.text(alphabet="abcXYZé", max_size=30),
       noise=st.text(alphabet="0123456789 !?.,。！？🐱", max_size=20))
def test_detect_language_counts_ideographs_against_latin_letters(
    han: str, latin: str, noise: str
) -> None:
    expected = "zh" if len(han) > len(latin) else "en"
    assert detect_language(han + noise + latin) == expected
    assert detect_language(latin + noise + han) == expected


# --- the language of a decision -------------------------------------------------------


def test_chinese_message_gets_a_chinese_fact_decision() -> None:
    decision = decide("请给我讲一个关于猫的知识", user(), NOON, AUTO)
    assert decision.action is Action.FACT
    assert decision.language == "zh"
    assert decide("tell me about cats", user(), NOON, AUTO).language == "en"


def test_mixed_message_follows_the_majority() -> None:
    assert decide("给我讲讲猫的知识吧 please", user(), NOON, AUTO).language == "zh"
    assert decide("please tell me a cat fact 猫", user(), NOON, AUTO).language == "en"


@pytest.mark.parametrize("text", ["", "🐱", "😺😺😺", "!!!", "42"])
def test_no_letters_means_english(text: str) -> None:
    assert decide(text, user(), NOON, AUTO).language == "en"


@pytest.mark.parametrize("text", ["hello", "请给我讲一个关于猫的知识", "🐱", "help", "帮助"])
def test_pinned_language_overrides_the_message(text: str) -> None:
    assert decide(text, user(), NOON, PIN_EN).language == "en"
    assert decide(text, user(), NOON, PIN_ZH).language == "zh"


def test_pinned_language_answers_commands_in_that_language() -> None:
    assert decide("帮助", user(), NOON, PIN_EN).text == HELP_TEXT
    assert decide("help", user(), NOON, PIN_ZH).text == TEXTS["zh"]["help"]
    assert decide("stop", user(), NOON, PIN_ZH).text == TEXTS["zh"]["stop"]
    stopped = decide("停止", user(), NOON, PIN_EN)
    assert stopped.text == STOP_TEXT
    assert decide("开始", stopped.state, NOON, PIN_EN).text == START_TEXT


def test_policy_build_maps_the_setting() -> None:
    assert Policy.build(1, 1, None, "").language is None
    assert Policy.build(1, 1, None, "", language="auto").language is None
    assert Policy.build(1, 1, None, "", language=None).language is None
    assert Policy.build(1, 1, None, "", language="en").language == "en"
    assert Policy.build(1, 1, None, "", language="zh").language == "zh"
    with pytest.raises(ValueError):
        Policy.build(1, 1, None, "", language="fr")
    with pytest.raises(ValueError):
        Policy(language="auto")


def test_every_decision_carries_a_language() -> None:
    # NONE decisions too (cooldown, opted out): the language is always one we speak.
    policy = Policy.build(60.0, 2, None, "")
    state = user()
    for text in ["你好", "你好", "hi", "停止", "hi", "开始", "hi", "hi"]:
        decision = decide(text, state, NOON, policy)
        assert decision.language in LANGUAGES
        state = decision.state


# --- both command sets ----------------------------------------------------------------

ZH_HELP = ["帮助", "帮助。", "帮助！", "帮助？", " 帮助 ", "帮助!!", "帮助?", "帮助\n",
           "\u3000帮助\u3000", "帮助。。。", "？", "指令", "命令！"]
ZH_STOP = ["停止", "停止。", "停止！", "停止！！！", " 停止 ", "停止?", "退订", "退订。",
           "取消订阅", "取消订阅！", "停止\n"]
ZH_START = ["开始", "开始。", "开始！", " 开始 ", "开始?!", "订阅", "订阅！", "恢复", "开始\t"]
EN_HELP = ["help", "HELP", "Help!", "help.", "?", "commands", " help "]
EN_STOP = ["stop", "STOP", "Stop!", "unsubscribe", "QUIT", "stop."]
EN_START = ["start", "START", "Start!", "unstop", "SUBSCRIBE"]


@pytest.mark.parametrize("text", ZH_HELP)
def test_chinese_help(text: str) -> None:
    assert command_of(text) == "help"
    decision = decide(text, user(), NOON, AUTO)
    assert decision.action is Action.HELP
    assert decision.language == "zh"
    assert decision.text == TEXTS["zh"]["help"]
    assert render(decision, None, AUTO) == TEXTS["zh"]["help"]


@pytest.mark.parametrize("text", ZH_STOP)
def test_chinese_stop(text: str) -> None:
    assert command_of(text) == "stop"
    decision = decide(text, user(), NOON, AUTO)
    assert decision.action is Action.STOPPED
    assert decision.language == "zh"
    assert decision.text == TEXTS["zh"]["stop"]
    assert decision.state.opted_out


@pytest.mark.parametrize("text", ZH_START)
def test_chinese_start(text: str) -> None:
    assert command_of(text) == "start"
    decision = decide(text, user(opted_out=True), NOON, AUTO)
    assert decision.action is Action.STARTED
    assert decision.language == "zh"
    assert decision.text == TEXTS["zh"]["start"]
    assert not decision.state.opted_out


@pytest.mark.parametrize(
    ("text", "command"),
    [(t, "help") for t in EN_HELP] + [(t, "stop") for t in EN_STOP]
    + [(t, "start") for t in EN_START],
)
def test_english_commands_still_answered_in_english(text: str, command: str) -> None:
    assert command_of(text) == command
    state = user(opted_out=command == "start")
    decision = decide(text, state, NOON, AUTO)
    assert decision.language == "en"
    assert decision.text == {"help": HELP_TEXT, "stop": STOP_TEXT, "start": START_TEXT}[command]


@pytest.mark.parametrize(
    "text", ["请停止", "停止发送", "帮助我", "我想开始", "开 始", "停", "帮助一下", "。停止",
             "不要停止", "订阅号"]
)
def test_chinese_non_commands_are_fact_requests(text: str) -> None:
    assert command_of(text) is None
    decision = decide(text, user(), NOON, AUTO)
    assert decision.action is Action.FACT
    assert decision.language == "zh"


def test_chinese_conversation_stop_silence_start() -> None:
    state = user()
    stop = decide("停止", state, NOON, AUTO)
    assert stop.action is Action.STOPPED
    for text in ["你好", "hello", "帮助", "help"]:
        silent = decide(text, stop.state, NOON + 1, AUTO)
        assert silent.action is Action.NONE
        assert silent.reason == "opted_out"
    assert decide("停止", stop.state, NOON + 2, AUTO).reason == "already_stopped"
    back = decide("开始", stop.state, NOON + 3, AUTO)
    assert back.action is Action.STARTED
    assert back.text == TEXTS["zh"]["start"]
    # Either language's commands work for anyone: stop in Chinese, start in English.
    assert decide("start", stop.state, NOON + 3, AUTO).text == START_TEXT


def test_english_constants_are_the_english_texts() -> None:
    assert TEXTS["en"] == {"help": HELP_TEXT, "stop": STOP_TEXT, "start": START_TEXT}
    assert set(TEXTS) == set(LANGUAGES) == set(_CORPUS_FILES)
    for texts in TEXTS.values():
        assert set(texts) == {"help", "stop", "start"}
    for text in TEXTS["zh"].values():
        assert detect_language(text) == "zh"
        assert len(text) < 280
    # The Chinese texts name the Chinese commands.
    assert all(word in TEXTS["zh"]["help"] for word in ("帮助", "停止", "开始"))
    assert "开始" in TEXTS["zh"]["stop"]
    assert "停止" in TEXTS["zh"]["start"]


def test_render_uses_the_decision_language_and_suffix() -> None:
    policy = Policy.build(0.0, 50, None, " Nya~")
    decision = decide("帮助", user(), NOON, policy)
    assert render(decision, None, policy) == TEXTS["zh"]["help"] + " Nya~"
    # A command decision built without its text still renders, in its own language.
    bare = Decision(Action.STOPPED, "stop", user(opted_out=True), language="zh")
    assert render(bare, None, policy) == TEXTS["zh"]["stop"] + " Nya~"
    assert render(Decision(Action.HELP, "help", user()), None, policy) == HELP_TEXT + " Nya~"


def test_a_trigger_still_applies_to_chinese_messages() -> None:
    policy = Policy.build(0.0, 50, "猫|cat", "")
    assert decide("我想听猫的知识", user(), NOON, policy).action is Action.FACT
    assert decide("你好", user(), NOON, policy).reason == "no_trigger"
    assert decide("帮助", user(), NOON, policy).action is Action.HELP


texts = st.one_of(
    st.text(),
    st.text(alphabet="猫狗你好帮助停止开始订阅退取消 abcHELPstop?!。！？\u3000\n🐱"),
    st.sampled_from(ZH_HELP + ZH_STOP + ZH_START + EN_HELP + EN_STOP + EN_START),
)
policies = st.builds(
    Policy.build,
    cooldown_seconds=st.floats(min_value=0, max_value=1e6),
    daily_cap=st.integers(min_value=0, max_value=100),
    trigger=st.one_of(st.none(), st.sampled_from(["cat", "猫", "."])),
    reply_suffix=st.text(max_size=10),
    language=st.sampled_from(["auto", "en", "zh", None]),
)
states = st.builds(
    UserState,
    user_id=st.just("42"),
    opted_out=st.booleans(),
    last_fact_at=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    replies_today=st.integers(min_value=0, max_value=200),
)


@given(text=texts, state=states, policy=policies,
       now=st.floats(min_value=0, max_value=datetime(2200, 1, 1, tzinfo=UTC).timestamp()))
@settings(max_examples=500, deadline=None)
def test_decide_never_raises_for_any_text(
    text: str, state: UserState, policy: Policy, now: float
) -> None:
    decision = decide(text, state, now, policy)
    assert decision.language in LANGUAGES
    if policy.language is not None:
        assert decision.language == policy.language
    if decision.action in {Action.HELP, Action.STOPPED, Action.STARTED}:
        command = command_of(text)
        assert command is not None
        assert decision.text == TEXTS[decision.language][command]
        render(decision, None, policy)
    elif decision.action is Action.FACT:
        render(decision, "fact", policy)


# --- the Chinese corpus ---------------------------------------------------------------


def test_chinese_corpus_file_is_one_clean_fact_per_line() -> None:
    raw = ZH_FILE.read_text(encoding="utf-8")
    assert raw.endswith("\n") and not raw.endswith("\n\n")
    lines = raw.splitlines()
    assert len(lines) >= 150
    for line in lines:
        assert line, "blank line in corpus_zh.txt"
        assert line == line.strip(), f"surrounding whitespace: {line!r}"
        assert not line.startswith("#"), line
    assert len(lines) == len(set(lines)) == len(load_corpus("zh"))


def test_chinese_corpus_facts_are_well_formed() -> None:
    facts = load_corpus("zh")
    assert len(facts) >= 150
    for fact in facts:
        assert 10 <= len(fact.text) < 280, fact.text
        assert fact.text[-1] in "。！？", fact.text
        assert detect_language(fact.text) == "zh", fact.text
        assert fact.id == fact_id("c:", fact.text)
    assert len({f.id for f in facts}) == len(facts)
    assert len({f.text for f in facts}) == len(facts)
    # Ids never collide with the English corpus: one seen set serves both languages.
    assert not {f.id for f in facts} & {f.id for f in load_corpus("en")}


def _bigrams(text: str) -> set[str]:
    chars = re.sub(r"[\W_]", "", text)
    return {chars[i:i + 2] for i in range(len(chars) - 1)}


def test_chinese_corpus_has_no_near_duplicates() -> None:
    # Chinese has no spaces: compare character pairs instead of words.
    facts = load_corpus("zh")
    grams = [_bigrams(f.text) for f in facts]
    for (i, a), (j, b) in itertools.combinations(enumerate(grams), 2):
        overlap = len(a & b) / len(a | b)
        assert overlap < 0.4, (facts[i].text, facts[j].text)


# --- no repeats, per user per language ------------------------------------------------


async def _reply(
    source: CorpusSource, text: str, state: UserState, now: float, policy: Policy = AUTO
) -> tuple[str, UserState, str]:
    """What the outbox does: decide, then fetch a fact in the decision's language."""
    decision = decide(text, state, now, policy)
    assert decision.action is Action.FACT
    fact, seen = await source.fact_for(decision.state.seen_facts, 280,
                                       language=decision.language)
    return fact.text, replace(decision.state, seen_facts=seen), decision.language


async def test_chinese_replies_come_from_the_chinese_corpus() -> None:
    source = CorpusSource(rng=random.Random(1))
    zh = {f.text for f in load_corpus("zh")}
    en = {f.text for f in load_corpus("en")}
    text, _, lang = await _reply(source, "请给我讲一个关于猫的知识", user(), NOON)
    assert lang == "zh" and text in zh
    text, _, lang = await _reply(source, "tell me something", user(), NOON)
    assert lang == "en" and text in en
    text, _, lang = await _reply(source, "hello", user(), NOON, PIN_ZH)
    assert lang == "zh" and text in zh


async def test_no_chinese_fact_repeats_until_the_corpus_is_exhausted() -> None:
    source = CorpusSource(rng=random.Random(2))
    corpus = load_corpus("zh")
    state = user()
    drawn = []
    for i in range(len(corpus)):
        text, state, _ = await _reply(source, "再来一个猫的知识", state, NOON + i)
        drawn.append(text)
    assert len(set(drawn)) == len(corpus)
    # The next cycle starts over, still without a repeat of the fact just sent.
    text, state, _ = await _reply(source, "再来一个", state, NOON + len(corpus))
    assert text in {f.text for f in corpus}
    assert state.seen_facts == {fact_id("c:", text)}


async def test_interleaved_languages_keep_independent_cycles() -> None:
    source = CorpusSource(rng=random.Random(3))
    zh_corpus, en_corpus = load_corpus("zh"), load_corpus("en")
    state = user()
    zh_drawn: list[str] = []
    en_drawn: list[str] = []
    now = NOON
    # Through the whole Chinese corpus, one English fact after each Chinese one.
    for _ in zh_corpus:
        text, state, _ = await _reply(source, "讲个猫的知识", state, now)
        zh_drawn.append(text)
        text, state, _ = await _reply(source, "another one", state, now + 1)
        en_drawn.append(text)
        now += 2
    assert len(set(zh_drawn)) == len(zh_corpus)
    assert len(set(en_drawn)) == len(en_drawn)
    # Exhausting Chinese restarts only the Chinese cycle: English ids are kept.
    text, state, _ = await _reply(source, "讲个猫的知识", state, now)
    en_ids = {fact_id("c:", t) for t in en_drawn}
    assert en_ids <= state.seen_facts
    assert state.seen_facts == en_ids | {fact_id("c:", text)}
    # And English continues without repeats until its own corpus runs out.
    for i in range(len(en_corpus) - len(en_drawn)):
        text, state, _ = await _reply(source, "more", state, now + 1 + i)
        en_drawn.append(text)
    assert len(set(en_drawn)) == len(en_corpus)


def test_pick_unseen_restart_of_one_language_keeps_the_other() -> None:
    zh, en = load_corpus("zh"), load_corpus("en")
    seen = frozenset({f.id for f in zh} | {en[0].id, en[1].id})
    fact, new_seen = _pick_unseen(zh, seen, random.Random(0))
    assert fact in zh
    assert new_seen == {fact.id, en[0].id, en[1].id}


# --- the setting ----------------------------------------------------------------------


@pytest.fixture
def no_env_language(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CATBOT_LANGUAGE", raising=False)
    yield


@pytest.mark.usefixtures("no_env_language")
def test_setting_defaults_to_auto(tmp_path: Path) -> None:
    settings_ = load_settings(tmp_path / "none.env")
    assert settings_.language == "auto"
    assert Policy.build(1, 1, None, "", language=settings_.language).language is None


@pytest.mark.parametrize("value", ["en", "zh", "auto"])
def test_setting_from_the_environment(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATBOT_LANGUAGE", value)
    assert load_settings(tmp_path / "none.env").language == value


def test_setting_rejects_other_languages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATBOT_LANGUAGE", "fr")
    with pytest.raises(ConfigError, match="CATBOT_LANGUAGE"):
        load_settings(tmp_path / "none.env")


# --- end to end: the real daemon and the X emulator -----------------------------------

FRIEND = "8686"


class World(BotAndX):
    def __init__(self, tmp: Path, daemon_env: dict[str, str] | None = None) -> None:
        emulator_port, port, metrics_port = free_port(), free_port(), free_port()
        self.daemon = Daemon(tmp, emulator_port, port, metrics_port, daemon_env)
        self.emulator = Emulator(tmp, emulator_port, self.daemon.webhook)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def _replies(world: World, count: int) -> list[str]:
    return wait_for(
        lambda: (r := world.emulator.replies_to(FRIEND)) and len(r) >= count and r,
        timeout=15.0, what=f"{count} replies",
    )


def test_a_chinese_conversation_end_to_end(world: World) -> None:
    zh = {f.text for f in load_corpus("zh")}
    world.emulator.dm(FRIEND, "请给我讲一个关于猫的知识")
    assert _replies(world, 1)[-1] in zh
    world.emulator.dm(FRIEND, "帮助")
    assert _replies(world, 2)[-1] == TEXTS["zh"]["help"]
    world.emulator.dm(FRIEND, "停止")
    assert _replies(world, 3)[-1] == TEXTS["zh"]["stop"]
    world.emulator.dm(FRIEND, "hello")
    time.sleep(1.0)
    assert len(world.emulator.replies_to(FRIEND)) == 3
    world.emulator.dm(FRIEND, "开始")
    assert _replies(world, 4)[-1] == TEXTS["zh"]["start"]
    world.emulator.dm(FRIEND, "hello again")
    assert _replies(world, 5)[-1] in {f.text for f in load_corpus("en")}
    world.emulator.dm(FRIEND, "再来一个！")
    replies = _replies(world, 6)
    assert replies[-1] in zh and replies[-1] != replies[0]


def test_a_pinned_language_end_to_end(tmp_path: Path) -> None:
    with World(tmp_path, {"CATBOT_LANGUAGE": "zh"}) as world:
        world.emulator.dm(FRIEND, "hello, any cat facts?")
        assert _replies(world, 1)[-1] in {f.text for f in load_corpus("zh")}
        world.emulator.dm(FRIEND, "help")
        assert _replies(world, 2)[-1] == TEXTS["zh"]["help"]
