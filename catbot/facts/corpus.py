"""The embedded cat-fact corpus and the no-repeat choice among facts.

`corpus.txt` ships as package data, one fact per line. A fact's id is a hash of its text, so
ids stay stable across releases for unchanged facts and a user's `seen` set survives a
corpus edit (ids of removed facts simply never match again).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

CORPUS_PREFIX = "c:"
REMOTE_PREFIX = "r:"


@dataclass(frozen=True)
class Fact:
    id: str
    text: str


def fact_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@functools.cache
def load_corpus() -> tuple[Fact, ...]:
    """The shipped facts, in file order; `RuntimeError` if the file is missing or empty."""
    try:
        raw = resources.files(__package__).joinpath("corpus.txt").read_text(encoding="utf-8")
    except OSError as exc:  # FileNotFoundError included: a broken install, not a user error
        raise RuntimeError(f"cat-fact corpus is unreadable: {exc}") from exc
    texts = (line.strip() for line in raw.splitlines())
    # dict.fromkeys drops exact duplicates, which would otherwise share an id.
    facts = tuple(dict.fromkeys(Fact(fact_id(CORPUS_PREFIX, t), t) for t in texts if t))
    if not facts:
        raise RuntimeError("cat-fact corpus is empty")
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
        self, seen: frozenset[str], max_length: int
    ) -> tuple[Fact, frozenset[str]]: ...

    async def aclose(self) -> None: ...


class CorpusSource:
    """A `FactSource` over the embedded corpus (or any given facts, for tests)."""

    def __init__(
        self, facts: Sequence[Fact] | None = None, rng: random.Random | None = None
    ) -> None:
        self._facts = tuple(facts) if facts is not None else load_corpus()
        if not self._facts:
            raise ValueError("CorpusSource needs at least one fact")
        self._rng = rng if rng is not None else random.Random()

    @property
    def facts(self) -> tuple[Fact, ...]:
        return self._facts

    def pick(self, seen: frozenset[str], max_length: int) -> tuple[Fact, frozenset[str]]:
        fitting = [f for f in self._facts if len(f.text) <= max_length]
        # The budget shrinks with the user-set reply suffix; an over-long fact beats no reply.
        return pick_unseen(fitting or self._facts, seen, self._rng)

    async def fact_for(self, seen: frozenset[str], max_length: int) -> tuple[Fact, frozenset[str]]:
        return self.pick(seen, max_length)

    async def aclose(self) -> None:
        return None
