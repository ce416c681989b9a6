"""Cat facts: the embedded corpus, the no-repeat pick, and an optional remote source."""

from catbot.facts.corpus import CorpusSource, Fact, FactSource, load_corpus, pick_unseen
from catbot.facts.remote import RemoteSource

__all__ = ["CorpusSource", "Fact", "FactSource", "RemoteSource", "load_corpus", "pick_unseen"]
