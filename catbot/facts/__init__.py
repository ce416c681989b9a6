"""Cat facts: where the text of a FACT reply comes from.

- `corpus`: the embedded corpora (one per language, package data), `load_corpus`, and
  `CorpusSource`, which picks a fact the user has not had yet (no repeat until the corpus
  is exhausted) that fits the reply's length.
- `remote`: `RemoteSource`, an optional HTTPS fact service with a cache, falling back to
  the corpus whenever it is slow, down or answers nonsense.

The outbox only knows the `FactSource` protocol; `app` picks the source from the settings.
"""

from catbot.facts.corpus import CorpusSource, Fact, FactSource, load_corpus
from catbot.facts.remote import RemoteSource

__all__ = ["CorpusSource", "Fact", "FactSource", "RemoteSource", "load_corpus"]
