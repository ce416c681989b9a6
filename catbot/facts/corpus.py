"""The embedded cat-fact corpora and the no-repeat choice among facts.

`corpus.txt` (English) and `corpus_zh.txt` (Chinese, Simplified) ship as package data, one
fact per line. A fact's id is a hash of its text, so ids stay stable across releases for
unchanged facts and a user's `seen` set survives a corpus edit (ids of removed facts simply
never match again). One seen set serves every language: the texts differ, so do the ids,
and `pick_unseen` only ever forgets the ids of the corpus it picks from, so each language
keeps its own no-repeat cycle.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

CORPUS_PREFIX = "c:"
REMOTE_PREFIX = "r:"

# The shipped corpus file of each language.
CORPUS_FILES: Mapping[str, str] = {"en": "corpus.txt", "zh": "corpus_zh.txt"}


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
        name = CORPUS_FILES[language]
    except KeyError:
        raise ValueError(
            f"no cat-fact corpus for language {language!r}; known: {sorted(CORPUS_FILES)}"
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


def pick_unseen(
    facts: Sequence[Fact], seen: frozenset[str], rng: random.Random
) -> tuple[Fact, frozenset[str]]:
    """Pick uniformly among `facts` not in `seen`; return it and the updated seen set.

    Once every fact in `facts` has been seen, the cycle restarts: only their ids are
    forgotten, so ids from other sources (remote facts) keep protecting against repeats.
    """
    if not facts:
        raise ValueError("pick_unseen needs at least one fact")
    unseen = [f for f in facts if f.id not in seen]
    if not unseen:
        ids = {f.id for f in facts}
        seen = frozenset(i for i in seen if i not in ids)
        unseen = list(facts)
    fact = rng.choice(unseen)
    return fact, seen | {fact.id}


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
            self._by_language = {lang: load_corpus(lang) for lang in CORPUS_FILES}
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
        facts = self.facts_in(language)
        fitting = [f for f in facts if len(f.text) <= max_length]
        # The budget shrinks with the user-set reply suffix; an over-long fact beats no reply.
        return pick_unseen(fitting or facts, seen, self._rng)

    async def fact_for(
        self, seen: frozenset[str], max_length: int, language: str = "en"
    ) -> tuple[Fact, frozenset[str]]:
        return self.pick(seen, max_length, language)

    async def aclose(self) -> None:
        return None
