"""Tests for catbot.facts: the shipped corpus, the no-repeat pick and the remote source.

RemoteSource is exercised against a real aiohttp server on 127.0.0.1, so timeouts, status
codes and bodies go through the same client code as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from twitter_text import parse_tweet

import catbot.facts
from catbot.facts import (
    CorpusSource,
    Fact,
    FactSource,
    RemoteSource,
    load_corpus,
)
from catbot.facts import corpus as corpus_module
from catbot.facts import remote as remote_module
from catbot.facts.corpus import _pick_unseen

CORPUS_FILE = Path(catbot.facts.__file__).parent / "corpus.txt"


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def make_facts(n: int, prefix: str = "c:") -> list[Fact]:
    texts = [f"Test fact number {i}." for i in range(n)]
    return [Fact(prefix + sha12(t), t) for t in texts]


# --- the shipped corpus ---------------------------------------------------------------


def test_corpus_file_is_one_clean_fact_per_line() -> None:
    lines = CORPUS_FILE.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 300
    for line in lines:
        assert line, "blank line in corpus"
        assert line == line.strip(), f"surrounding whitespace: {line!r}"
        assert not line.startswith("#"), f"comment in corpus: {line!r}"
    # load_corpus de-duplicates; the file itself must not need it.
    assert len(lines) == len(set(lines)) == len(load_corpus())


def test_corpus_facts_are_well_formed() -> None:
    facts = load_corpus()
    assert len(facts) >= 300
    for fact in facts:
        assert fact.text
        assert fact.text == fact.text.strip()
        assert len(fact.text) < 280, fact.text
        assert fact.text[-1] in ".!?", fact.text
        assert fact.id == "c:" + sha12(fact.text)


def test_corpus_facts_are_distinct() -> None:
    facts = load_corpus()
    assert len({f.id for f in facts}) == len(facts)
    assert len({f.text for f in facts}) == len(facts)
    assert len({normalise(f.text) for f in facts}) == len(facts)


def test_corpus_has_no_near_duplicates() -> None:
    # A cheap guard against the same fact written twice with small edits.
    words = [set(normalise(f.text).split()) for f in load_corpus()]
    for (i, a), (j, b) in itertools.combinations(enumerate(words), 2):
        overlap = len(a & b) / len(a | b)
        assert overlap < 0.6, (load_corpus()[i].text, load_corpus()[j].text)


def test_load_corpus_is_cached() -> None:
    assert load_corpus() is load_corpus()
    assert load_corpus() is load_corpus("en")
    assert load_corpus("zh") is load_corpus("zh")


@pytest.fixture
def fresh_corpus_cache() -> Iterator[None]:
    corpus_module._read_corpus.cache_clear()
    yield
    corpus_module._read_corpus.cache_clear()


@pytest.mark.usefixtures("fresh_corpus_cache")
@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("content", [None, "", "\n  \n\n"])
def test_load_corpus_missing_or_empty_raises(
    content: str | None, language: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if content is not None:
        (tmp_path / corpus_module._CORPUS_FILES[language]).write_text(content, encoding="utf-8")
    monkeypatch.setattr(importlib.resources, "files", lambda _package: tmp_path)
    with pytest.raises(RuntimeError):
        load_corpus(language)


def test_load_corpus_unknown_language() -> None:
    with pytest.raises(ValueError):
        load_corpus("fr")


# --- _pick_unseen ---------------------------------------------------------------------


def test_pick_unseen_never_repeats_until_exhausted_then_restarts() -> None:
    facts = load_corpus()
    rng = random.Random(7)
    seen: frozenset[str] = frozenset()
    drawn = []
    for _ in facts:
        fact, seen = _pick_unseen(facts, seen, rng)
        drawn.append(fact.id)
    assert len(set(drawn)) == len(facts)
    # A new cycle has begun, remembering only which fact ended the last one.
    assert seen == {"last:" + drawn[-1]}

    fact, seen = _pick_unseen(facts, seen, rng)
    assert fact in facts and fact.id != drawn[-1]
    assert seen == {fact.id}


def assert_cycles(drawn: list[str], ids: set[str]) -> None:
    """Each run of len(ids) picks from the start gives every fact once, and no fact follows
    itself, at a cycle's turn either."""
    for start in range(0, len(drawn), len(ids)):
        cycle = drawn[start:start + len(ids)]
        assert len(set(cycle)) == len(cycle) and set(cycle) <= ids, drawn
    assert all(a != b for a, b in itertools.pairwise(drawn)), drawn


@pytest.mark.parametrize("n", [2, 3, 5])
def test_the_last_fact_of_a_cycle_never_comes_again_at_once(n: int) -> None:
    # Issue 14: when the cycle started over, the fact just given could be drawn first.
    facts = make_facts(n)
    for seed in range(200):
        rng = random.Random(seed)
        seen: frozenset[str] = frozenset()
        drawn = []
        for _ in range(4 * n):
            fact, seen = _pick_unseen(facts, seen, rng)
            drawn.append(fact.id)
        assert_cycles(drawn, {f.id for f in facts})


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.fixed_dictionaries({"en": st.integers(2, 6), "zh": st.integers(2, 6)}),
    asks=st.lists(st.tuples(st.sampled_from(["en", "zh"]), st.integers(0, 40)),
                  min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_repeat_across_resets_whatever_the_budget_and_language(
    sizes: dict[str, int], asks: list[tuple[str, int]], seed: int
) -> None:
    # Budgets change between picks (a DM, then a post with a long suffix) and languages
    # interleave: each language still cycles through all of its facts, and no cycle
    # starts with the fact that ended the previous one.
    facts = {
        lang: [Fact(f"c:{lang}{i}", lang * (5 * i + 3)) for i in range(size)]
        for lang, size in sizes.items()
    }
    source = CorpusSource(facts, random.Random(seed))
    seen: frozenset[str] = frozenset()
    drawn: dict[str, list[str]] = {"en": [], "zh": []}
    for lang, budget in asks:
        fact, seen = source.pick(seen, budget, lang)
        drawn[lang].append(fact.id)
    for lang, ids in drawn.items():
        assert_cycles(ids, {f.id for f in facts[lang]})


def test_pick_unseen_restart_keeps_ids_from_other_sources() -> None:
    facts = make_facts(3)
    foreign = {"r:" + sha12("remote one"), "r:" + sha12("remote two"), "c:retired00000"}
    seen = frozenset({f.id for f in facts} | foreign)
    fact, new_seen = _pick_unseen(facts, seen, random.Random(1))
    assert fact in facts
    assert new_seen == foreign | {fact.id}


def test_pick_unseen_only_picks_unseen_and_is_roughly_uniform() -> None:
    facts = make_facts(4)
    seen = frozenset({facts[0].id})
    rng = random.Random(3)
    counts = Counter(_pick_unseen(facts, seen, rng)[0].id for _ in range(3000))
    assert set(counts) == {f.id for f in facts[1:]}
    for n in counts.values():
        assert 850 < n < 1150  # expected 1000 each; ~5 standard deviations either way


def test_pick_unseen_rejects_empty() -> None:
    with pytest.raises(ValueError):
        _pick_unseen([], frozenset(), random.Random(0))


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=25),
    data=st.data(),
    rng=st.randoms(use_true_random=False),
)
def test_pick_unseen_property(n: int, data: st.DataObject, rng: random.Random) -> None:
    facts = make_facts(n)
    ids = {f.id for f in facts}
    seen_idx = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1)))
    foreign = data.draw(st.sets(st.text(min_size=1, max_size=8).map(lambda s: "r:" + s)))
    seen = frozenset({facts[i].id for i in seen_idx} | foreign)

    preferred_idx = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1)))
    preferred = {facts[i].id for i in preferred_idx}

    fact, new_seen = _pick_unseen(facts, seen, rng, prefer=lambda f: f.id in preferred)

    assert fact in facts
    unseen = ids - seen if len(seen_idx) < n else ids
    assert fact.id in unseen
    if unseen & preferred:
        assert fact.id in preferred
    if len(unseen) == 1:
        # The cycle ends with this pick: the next one holds only a note of it.
        assert new_seen == (seen - ids) | {"last:" + fact.id}
    elif len(seen_idx) == n:
        assert new_seen == (seen - ids) | {fact.id}
    else:
        assert new_seen == seen | {fact.id}
    assert foreign <= new_seen


def test_pick_unseen_asks_about_few_facts_and_stays_uniform_among_preferred() -> None:
    """Judging a fact (X's weighted length) costs about 0.5 ms: a pick that judged every
    unseen fact blocked the event loop for 200 ms on the shipped corpus."""
    facts = make_facts(400)
    preferred = {f.id for f in facts[::4]}
    asked = 0

    def prefer(fact: Fact) -> bool:
        nonlocal asked
        asked += 1
        return fact.id in preferred

    rng = random.Random(7)
    picks = Counter(
        _pick_unseen(facts, frozenset(), rng, prefer=prefer)[0].id for _ in range(20_000)
    )
    # A random order meets a preferred fact after 4 questions on average (1 in 4 is one).
    assert asked / 20_000 < 8
    assert set(picks) == preferred
    # Uniform among the 100 preferred facts: 200 each expected; a chi-square-style bound.
    assert max(picks.values()) < 300 and min(picks.values()) > 120


# --- CorpusSource ---------------------------------------------------------------------


def short_and_long() -> list[Fact]:
    texts = ["Short one.", "Short two.", "This one is much, much longer than the others."]
    return [Fact("c:" + sha12(t), t) for t in texts]


async def test_corpus_source_prefers_facts_within_max_length_yet_cycles_through_all() -> None:
    source = CorpusSource(short_and_long(), random.Random(0))
    seen: frozenset[str] = frozenset()
    got = []
    for _ in range(6):
        fact, seen = await source.fact_for(seen, 20)
        got.append(fact.text)
    shorts = {"Short one.", "Short two."}
    # The facts that fit come first in each cycle; the long one still has its turn.
    assert set(got[:2]) == set(got[3:5]) == shorts
    assert got[2] == got[5] == short_and_long()[2].text


async def test_corpus_source_measures_facts_as_x_counts_a_post() -> None:
    # 70 Chinese characters weigh 140 in a post; 100 Latin letters weigh 100.
    chinese, latin = "猫" * 70, "a" * 100
    budget = 120
    assert len(chinese) <= budget < parse_tweet(chinese).weightedLength
    assert parse_tweet(latin).weightedLength <= budget
    facts = [Fact("c:" + sha12(t), t) for t in (chinese, latin)]
    for seed in range(20):
        fact, _ = await CorpusSource(facts, random.Random(seed)).fact_for(frozenset(), budget)
        assert fact.text == latin


async def test_corpus_source_uses_all_facts_when_none_fit() -> None:
    facts = short_and_long()
    source = CorpusSource(facts, random.Random(0))
    fact, seen = await source.fact_for(frozenset(), 3)
    assert fact in facts
    assert seen == {fact.id}


async def test_corpus_source_defaults_to_shipped_corpus() -> None:
    source: FactSource = CorpusSource()
    fact, seen = await source.fact_for(frozenset(), 280)
    assert fact in load_corpus()
    assert seen == {fact.id}
    await source.aclose()


def test_corpus_source_rejects_empty_facts() -> None:
    with pytest.raises(ValueError):
        CorpusSource([])


# --- RemoteSource against a real local server -----------------------------------------


class CatApi:
    """A catfact.ninja look-alike whose behaviour each test sets through `mode`."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.texts = ["Remote fact one.", "Remote fact two.", "Remote fact three."]
        self.requests: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self._next = 0

    def next_text(self) -> str:
        text = self.texts[self._next % len(self.texts)]
        self._next += 1
        return text

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        mode = self.mode
        if mode == "slow":
            # Much slower than any client timeout in these tests; released at teardown so
            # server shutdown does not wait on a sleeping handler.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), timeout=3.0)
            mode = "ok"
        if mode == "ok":
            text = self.next_text()
            return web.json_response({"fact": text, "length": len(text)})
        if mode == "404":
            return web.json_response({"message": "Fact not found"}, status=404)
        if mode == "404withfact":
            # A status that is not 200 is a failure even if the body looks usable.
            return web.json_response({"fact": "Cats are great.", "length": 15}, status=404)
        if mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "badjson":
            return web.Response(text='{"fact": "Cats', content_type="application/json")
        if mode == "html":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if mode == "notdict":
            return web.json_response(["Cats are great."])
        if mode == "nofact":
            return web.json_response({"length": 0})
        if mode == "emptyfact":
            return web.json_response({"fact": "   ", "length": 3})
        if mode == "numberfact":
            return web.json_response({"fact": 42, "length": 2})
        if mode == "toolong":
            return web.json_response({"fact": "Cats. " * 100, "length": 600})
        raise AssertionError(f"unknown mode {mode}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def api() -> AsyncIterator[tuple[CatApi, str]]:
    cat_api = CatApi()
    app = web.Application()
    app.router.add_get("/fact", cat_api.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield cat_api, str(server.make_url("/"))
    finally:
        cat_api.release.set()
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


FALLBACK = make_facts(5)
FALLBACK_IDS = {f.id for f in FALLBACK}


class Harness:
    def __init__(
        self,
        api: tuple[CatApi, str],
        session: aiohttp.ClientSession,
        *,
        timeout: float = 2.0,
        cache_seconds: float = 300.0,
    ) -> None:
        self.api, self.url = api
        self.clock = FakeClock()
        self.outcomes: list[str] = []
        self.source = RemoteSource(
            self.url,
            session,
            CorpusSource(FALLBACK, random.Random(0)),
            timeout=timeout,
            cache_seconds=cache_seconds,
            clock=self.clock,
            rng=random.Random(0),
            on_outcome=self.outcomes.append,
        )

    async def ask(
        self, seen: frozenset[str] = frozenset(), max_length: int = 200
    ) -> tuple[Fact, frozenset[str]]:
        return await self.source.fact_for(seen, max_length)


async def test_remote_success(api: tuple[CatApi, str], session: aiohttp.ClientSession) -> None:
    h = Harness(api, session)
    fact, seen = await h.ask(max_length=123)
    assert fact == Fact("r:" + sha12("Remote fact one."), "Remote fact one.")
    assert seen == {fact.id}
    assert h.outcomes == ["remote"]
    assert h.api.requests == [{"max_length": "123"}]


async def test_remote_base_url_with_trailing_slash_or_not(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    cat_api, url = api
    for base in (url.rstrip("/"), url.rstrip("/") + "/"):
        source = RemoteSource(base, session, CorpusSource(FALLBACK))
        fact, _ = await source.fact_for(frozenset(), 200)
        assert fact.id.startswith("r:")
    assert len(cat_api.requests) == 2


FAILURE_MODES = "404 404withfact 500 badjson html notdict nofact emptyfact numberfact toolong"


@pytest.mark.parametrize("mode", FAILURE_MODES.split())
async def test_remote_failure_falls_back(
    mode: str, api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    h.api.mode = mode
    fact, seen = await h.ask()
    assert fact in FALLBACK
    assert seen == {fact.id}
    assert h.outcomes == ["fallback"]
    assert len(h.api.requests) == 1


async def test_remote_network_error_falls_back(session: aiohttp.ClientSession) -> None:
    # Bind a port, then free it: nothing listens there any more.
    probe = TestServer(web.Application(), host="127.0.0.1", port=0)
    await probe.start_server()
    url = str(probe.make_url("/"))
    await probe.close()
    outcomes: list[str] = []
    source = RemoteSource(url, session, CorpusSource(FALLBACK), on_outcome=outcomes.append)
    fact, _ = await source.fact_for(frozenset(), 200)
    assert fact in FALLBACK
    assert outcomes == ["fallback"]


async def test_remote_slow_falls_back_within_timeout(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session, timeout=0.2)
    h.api.mode = "slow"
    started = time.monotonic()
    fact, _ = await h.ask()
    elapsed = time.monotonic() - started
    assert fact in FALLBACK
    assert h.outcomes == ["fallback"]
    assert 0.15 <= elapsed < 1.0
    assert len(h.api.requests) == 1


async def test_remote_backoff_after_failure(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session, cache_seconds=300.0)  # back-off: min(300, 30) = 30 s
    h.api.mode = "500"
    await h.ask()
    assert len(h.api.requests) == 1

    h.api.mode = "ok"
    h.clock.now += 29.0
    fact, _ = await h.ask()
    assert fact in FALLBACK
    assert len(h.api.requests) == 1, "called the remote during the back-off"

    h.clock.now += 2.0
    fact, _ = await h.ask()
    assert fact.id.startswith("r:")
    assert len(h.api.requests) == 2
    assert h.outcomes == ["fallback", "fallback", "remote"]


async def test_remote_backoff_never_exceeds_cache_seconds(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session, cache_seconds=5.0)
    h.api.mode = "500"
    await h.ask()
    h.clock.now += 4.0
    await h.ask()
    assert len(h.api.requests) == 1
    h.clock.now += 2.0
    await h.ask()
    assert len(h.api.requests) == 2


async def test_remote_cache_served_after_failure(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    alice: frozenset[str] = frozenset()
    fetched = set()
    for _ in range(2):
        fact, alice = await h.ask(alice)
        fetched.add(fact.id)
    assert h.outcomes == ["remote", "remote"]

    h.api.mode = "500"
    bob: frozenset[str] = frozenset()
    served = []
    for _ in range(3):
        fact, bob = await h.ask(bob)
        served.append(fact.id)
    # The failed request is the only one; the back-off covers the other two calls.
    assert len(h.api.requests) == 3
    assert h.outcomes[2:] == ["cache", "cache", "fallback"]
    assert set(served[:2]) == fetched
    assert served[2] in FALLBACK_IDS
    assert bob == set(served)


async def test_remote_cache_expires(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session, cache_seconds=60.0)
    await h.ask()
    h.api.mode = "500"
    h.clock.now += 61.0
    fact, _ = await h.ask()
    assert fact in FALLBACK
    assert h.outcomes == ["remote", "fallback"]


async def test_remote_cache_honours_max_length(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    h.api.texts = ["A remote fact that is rather long."]
    await h.ask()
    h.api.mode = "500"
    fact, _ = await h.ask(max_length=20)
    assert fact in FALLBACK
    assert h.outcomes == ["remote", "fallback"]


async def test_remote_cache_is_bounded(
    api: tuple[CatApi, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_module, "_POOL_MAX", 3)
    h = Harness(api, session)
    h.api.texts = [f"Remote fact {i}." for i in range(5)]
    for _ in range(5):
        await h.ask()
    h.api.mode = "500"
    bob: frozenset[str] = frozenset()
    served = []
    for _ in range(4):
        fact, bob = await h.ask(bob)
        served.append(fact.text)
    # Only the three newest survive; the fourth answer has to come from the corpus.
    assert set(served[:3]) == {"Remote fact 2.", "Remote fact 3.", "Remote fact 4."}
    assert h.outcomes[5:] == ["cache", "cache", "cache", "fallback"]


async def test_remote_repeat_is_not_served_twice(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    h.api.texts = ["The only remote fact."]
    first, seen = await h.ask()
    assert first.text == "The only remote fact."

    second, seen = await h.ask(seen)
    assert second.id != first.id
    assert second in FALLBACK
    assert h.outcomes == ["remote", "fallback"]
    assert len(h.api.requests) == 2  # one remote call per fact_for, never a retry loop
    assert seen == {first.id, second.id}


async def test_remote_repeat_prefers_cached_fact(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    h.api.texts = ["Remote fact one.", "Remote fact two."]
    await h.ask()  # warms the cache with fact one for someone else
    await h.ask()  # and fact two
    h.api.texts = ["Remote fact two."]
    seen = frozenset({"r:" + sha12("Remote fact two.")})
    fact, _ = await h.ask(seen)
    assert fact.text == "Remote fact one."
    assert h.outcomes[-1] == "cache"


async def test_remote_ids_in_seen_are_capped(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    h = Harness(api, session)
    old_remote = {f"r:{i:012x}" for i in range(300)}
    corpus_ids = {f.id for f in FALLBACK[:3]}
    fact, seen = await h.ask(frozenset(old_remote | corpus_ids))
    assert h.outcomes == ["remote"]
    remote_ids = {i for i in seen if i.startswith("r:")}
    assert len(remote_ids) == 200
    assert fact.id in seen
    assert corpus_ids <= seen
    assert remote_ids - {fact.id} <= old_remote

    # Fallback path: the user has seen the cached fact too, so the corpus answers.
    cached = fact
    h.api.mode = "500"
    fact, seen = await h.ask(frozenset(old_remote | {cached.id}))
    assert h.outcomes[-1] == "fallback"
    assert fact in FALLBACK
    assert len({i for i in seen if i.startswith("r:")}) == 200
    assert fact.id in seen
    # The cached fact could be served again, so its id is the last one to be forgotten.
    assert cached.id in seen


async def test_remote_without_outcome_callback_and_aclose_keeps_session(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    _, url = api
    source: FactSource = RemoteSource(url, session, CorpusSource(FALLBACK))
    fact, _ = await source.fact_for(frozenset(), 200)
    assert fact.id.startswith("r:")
    await source.aclose()
    assert not session.closed


# --- languages ------------------------------------------------------------------------


async def test_corpus_source_serves_each_language_from_its_corpus() -> None:
    source = CorpusSource(rng=random.Random(5))
    assert source.languages == ("en", "zh")
    assert source.facts == load_corpus()
    assert source.facts_in("zh") == load_corpus("zh")
    seen: frozenset[str] = frozenset()
    zh, seen = await source.fact_for(seen, 280, language="zh")
    en, seen = await source.fact_for(seen, 280)
    assert zh in load_corpus("zh")
    assert en in load_corpus()
    assert seen == {zh.id, en.id}
    with pytest.raises(ValueError):
        await source.fact_for(frozenset(), 280, language="fr")


async def test_corpus_source_with_one_fact_set_serves_it_for_every_language() -> None:
    facts = make_facts(2)
    source = CorpusSource(facts, random.Random(0))
    assert source.languages is None
    fact, _ = await source.fact_for(frozenset(), 280, language="zh")
    assert fact in facts


async def test_corpus_source_with_a_mapping() -> None:
    en, zh = make_facts(2), [Fact("c:" + sha12(t), t) for t in ("一。", "二。")]
    source = CorpusSource({"en": en, "zh": zh}, random.Random(0))
    assert source.facts == tuple(en)
    assert (await source.fact_for(frozenset(), 280, "zh"))[0] in zh
    with pytest.raises(ValueError):
        source.facts_in("fr")
    with pytest.raises(ValueError):
        CorpusSource({"en": en, "zh": []})
    with pytest.raises(ValueError):
        CorpusSource({})


ZH_FALLBACK = [Fact("c:" + sha12(t), t) for t in ("猫会打呼噜。", "猫爱晒太阳。")]


async def test_remote_serves_other_languages_from_the_corpus_without_a_request(
    api: tuple[CatApi, str], session: aiohttp.ClientSession
) -> None:
    cat_api, url = api
    outcomes: list[str] = []
    source = RemoteSource(url, session, CorpusSource({"en": FALLBACK, "zh": ZH_FALLBACK}),
                          on_outcome=outcomes.append)
    seen: frozenset[str] = frozenset()
    zh, seen = await source.fact_for(seen, 200, language="zh")
    assert zh in ZH_FALLBACK
    assert cat_api.requests == []
    assert outcomes == ["corpus"]
    en, seen = await source.fact_for(seen, 200, language="en")
    assert en.id.startswith("r:")
    assert outcomes == ["corpus", "remote"]
    assert seen == {zh.id, en.id}
    # An English fallback stays English.
    cat_api.mode = "500"
    source2 = RemoteSource(url, session, CorpusSource({"en": FALLBACK, "zh": ZH_FALLBACK}))
    fact, _ = await source2.fact_for(frozenset(), 200)
    assert fact in FALLBACK
