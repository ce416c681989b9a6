"""The embedded cat-fact corpora and the no-repeat choice among facts.

`corpus.txt` (English) and `corpus_zh.txt` (Chinese, Simplified) ship as package data, one
fact per line. A fact's id is a hash of its text, so ids stay stable across releases for
unchanged facts and a user's `seen` set survives a corpus edit (ids of removed facts simply
never match again). One seen set serves every language: the texts differ, so do the ids,
and `_pick_unseen` only ever forgets the ids of the corpus it picks from, so each language
keeps its own no-repeat cycle.

A cycle starts over the moment its last unseen fact is given: the seen set holds no order,
so that is the one time the picker knows which fact ended the cycle. The new cycle's seen set
then holds only a note of it (`last:<id>`), and the next cycle's first fact is any other one;
picking it drops the note. Every cycle still gives every fact once.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from catbot.textfit import post_weight

CORPUS_PREFIX = "c:"
REMOTE_PREFIX = "r:"
# Marks, in a seen set, the fact that ended the last cycle (see the module notes).
LAST_PREFIX = "last:"

# The shipped corpus file of each language.
_CORPUS_FILES: Mapping[str, str] = {"en": "corpus.txt", "zh": "corpus_zh.txt"}


@dataclass(frozen=True)
class Fact:
    id: str
    text: str


def fact_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_corpus(language: str = "en") -> tuple[Fact, ...]:
    """The shipped facts of `language`, in file order (cached).

    `ValueError` for a language without a corpus; `RuntimeError` if the file is missing or
    empty.
    """
    try:
        name = _CORPUS_FILES[language]
    except KeyError:
        raise ValueError(
            f"no cat-fact corpus for language {language!r}; known: {sorted(_CORPUS_FILES)}"
        ) from None
    return _read_corpus(name)


@functools.cache
def _read_corpus(name: str) -> tuple[Fact, ...]:
    try:
        raw = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    except OSError as exc:  # FileNotFoundError included: a broken install, not a user error
        raise RuntimeError(f"cat-fact corpus {name} is unreadable: {exc}") from exc
    texts = (line.strip() for line in raw.splitlines())
    # dict.fromkeys drops exact duplicates, which would otherwise share an id.
    facts = tuple(dict.fromkeys(Fact(fact_id(CORPUS_PREFIX, t), t) for t in texts if t))
    if not facts:
        raise RuntimeError(f"cat-fact corpus {name} is empty")
    return facts


def _pick_unseen(
    facts: Sequence[Fact],
    seen: frozenset[str],
    rng: random.Random,
    prefer: Callable[[Fact], bool] | None = None,
) -> tuple[Fact, frozenset[str]]:
    """Pick uniformly among `facts` not in `seen`; return it and the updated seen set.

    `prefer`: among the unseen facts, pick from those it accepts when there are any (facts
    that fit beside a reply suffix); the cycle still covers every fact.

    Giving the last unseen fact starts the next cycle at once, and the next cycle's first
    pick is never that fact (see the module notes), unless it is the only one. Starting
    over forgets only the ids of `facts`, so ids from other sources (remote facts, the other
    language) keep protecting against repeats. A seen set that already covers every fact
    (saved before cycles restarted this way, or whose unseen facts were edited out of the
    corpus) restarts from all of them.
    """
    if not facts:
        raise ValueError("_pick_unseen needs at least one fact")
    ids = {f.id for f in facts}
    notes = {i for i in seen if i.startswith(LAST_PREFIX) and i[len(LAST_PREFIX):] in ids}
    seen = seen - notes
    unseen = [f for f in facts if f.id not in seen]
    if not unseen:
        seen = frozenset(i for i in seen if i not in ids)
        unseen = list(facts)
    just_given = {note[len(LAST_PREFIX):] for note in notes}
    candidates = [f for f in unseen if f.id not in just_given] or unseen
    # The first preferred fact of a random order is a uniform pick among the preferred ones,
    # and asks `prefer` about one or two facts instead of all of them: measuring a fact as X
    # counts it costs about 0.5 ms, so judging a whole corpus would block the loop ~200 ms.
    order = rng.sample(candidates, len(candidates))
    fact = next((f for f in order if prefer is None or prefer(f)), order[0])
    seen = seen | {fact.id}
    if ids <= seen:
        seen = frozenset(i for i in seen if i not in ids) | {LAST_PREFIX + fact.id}
    return fact, seen


class FactSource(Protocol):
    async def fact_for(
        self, seen: frozenset[str], max_length: int, language: str = "en"
    ) -> tuple[Fact, frozenset[str]]: ...

    async def aclose(self) -> None: ...


class CorpusSource:
    """A `FactSource` over the embedded corpora (or any given facts, for tests).

    `facts` may be None (the shipped corpus of every language, loaded now so a broken
    install fails at start-up), one sequence (used for every language: a test double), or
    a mapping from language to facts.
    """

    def __init__(
        self,
        facts: Sequence[Fact] | Mapping[str, Sequence[Fact]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._by_language: dict[str, tuple[Fact, ...]] | None
        if facts is None:
            self._by_language = {lang: load_corpus(lang) for lang in _CORPUS_FILES}
            self._any: tuple[Fact, ...] = ()
        elif isinstance(facts, Mapping):
            self._by_language = {lang: tuple(fs) for lang, fs in facts.items()}
            self._any = ()
            if not self._by_language or not all(self._by_language.values()):
                raise ValueError("CorpusSource needs at least one fact per language")
        else:
            self._by_language = None
            self._any = tuple(facts)
            if not self._any:
                raise ValueError("CorpusSource needs at least one fact")
        self._rng = rng if rng is not None else random.Random()

    @property
    def facts(self) -> tuple[Fact, ...]:
        """The English facts (or the single given set)."""
        return self.facts_in("en")

    @property
    def languages(self) -> tuple[str, ...] | None:
        """The languages with their own facts; None when one set serves every language."""
        return None if self._by_language is None else tuple(self._by_language)

    def facts_in(self, language: str) -> tuple[Fact, ...]:
        if self._by_language is None:
            return self._any
        try:
            return self._by_language[language]
        except KeyError:
            raise ValueError(f"no cat facts in language {language!r}") from None

    def pick(
        self, seen: frozenset[str], max_length: int, language: str = "en"
    ) -> tuple[Fact, frozenset[str]]:
        """An unseen fact, one within `max_length` (X's weighted length) when any is left.

        The budget shrinks with the user-set reply suffix. A longer fact still comes in its
        turn (the reply's suffix then gives way): every fact is in every cycle, so a change
        of budget never resets anyone's cycle or brings back a fact given a moment ago.
        """
        return _pick_unseen(self.facts_in(language), seen, self._rng,
                           prefer=lambda fact: post_weight(fact.text) <= max_length)

    async def fact_for(
        self, seen: frozenset[str], max_length: int, language: str = "en"
    ) -> tuple[Fact, frozenset[str]]:
        return self.pick(seen, max_length, language)

    async def aclose(self) -> None:
        return None
