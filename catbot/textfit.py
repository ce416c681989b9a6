"""How much text X takes in one reply, and fitting a reply into it. Pure: no I/O.

Posts (public replies to mentions): at most 280 characters as X counts them, which is not
`len()`: twitter-text v3 weights (Latin and common punctuation 1, CJK, emoji and most other
scripts 2, every URL 23 as the t.co link that replaces it), after NFC normalisation. Source:
docs.x.com/fundamentals/counting-characters (xdevplatform/docs
fundamentals/counting-characters.mdx), which tells clients to count with the twitter-text
library; we use its Python port, PyPI `twitter-text-parser` (import `twitter_text`), which
passes twitter-text's conformance suite. Its `valid` is what X accepts: 1 to 280 weighted
characters and none of the characters twitter-text forbids (U+FFFE, U+FEFF, U+FFFF).

DMs: at most 10,000 characters. Source: the v1.1 send page,
developer.x.com/en/docs/direct-messages/sending-and-receiving/api-reference/new-event
("Max length of 10,000 characters"). docs.x.com's v2 DM pages (x-api/direct-messages/...)
document no text limit, and neither page says how a DM character is counted: we count code
points.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final, Literal

from twitter_text import parse_tweet

# Where a reply goes: a direct message, or a public post (a reply to a mention).
Channel = Literal["dm", "post"]

MAX_POST_WEIGHT: Final = 280
MAX_DM_CHARS: Final = 10_000
_ELLIPSIS: Final = "…"

# A suffix is shortened by whole words, each with the whitespace before it: a URL or a
# handle is kept whole or dropped, never cut into something that links elsewhere.
_WORDS = re.compile(r"\s*\S+")


@functools.lru_cache(maxsize=4096)
def post_weight(text: str) -> int:
    """`text`'s length as X counts it in a post (cached: facts are measured again and again)."""
    return int(parse_tweet(text).weightedLength)


def fits_post(text: str) -> bool:
    """X would take `text` as a post."""
    return bool(parse_tweet(text).valid)


def fits_dm(text: str) -> bool:
    """X would take `text` as a DM (by length: X documents no forbidden characters for DMs)."""
    return 0 < len(text) <= MAX_DM_CHARS


FITS: Final[dict[str, Callable[[str], bool]]] = {"dm": fits_dm, "post": fits_post}


def fit_reply(body: str, suffix: str, channel: Channel) -> str:
    """The reply to send on `channel`: never one X would refuse for its length.

    `body + suffix` when it fits; else the suffix cut back to the leading whole words that
    still fit (maybe none); else `body` cut short with an ellipsis. The body (the fact or the
    command's answer) is what the user asked for, so the suffix always yields first.
    """
    fits = FITS[channel]
    if fits(body + suffix):
        return body + suffix
    words = _WORDS.findall(suffix)
    # The largest number of leading words that fits: more words never weigh less, so
    # bisect instead of trying each (a suffix can be long, and measuring a post is not free).
    kept = _largest(len(words) - 1, lambda n: fits(body + "".join(words[:n])))
    if kept is not None:
        return body + "".join(words[:kept])
    return _shortened(body, fits)


def _shortened(body: str, fits: Callable[[str], bool]) -> str:
    """The longest start of `body` that fits with an ellipsis after it, ending at a word
    boundary when one is near (Chinese has none: it is cut between characters)."""

    def text(size: int) -> str:
        return body[:size].rstrip() + _ELLIPSIS

    size = _largest(len(body), lambda n: fits(text(n)))
    if size is None:
        # Only reachable for a channel that takes not even one character.
        raise ValueError("no text fits this channel")
    space = body.rfind(" ", size // 2, size)
    if space > 0 and fits(text(space)):
        size = space
    return text(size)


def _largest(high: int, fits: Callable[[int], bool]) -> int | None:
    """The largest n in [0, high] with fits(n), assuming fits is true up to some n and false
    after it; None when even fits(0) is false."""
    if high < 0 or not fits(0):
        return None
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
