"""The public thread: users' posts naming the bot and the bot's own posts and replies.

The shapes X delivers them in are built in `catbot.emulator.posts`; this room only keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catbot.emulator.state.common import ChangeFeed, iso_timestamp


@dataclass(frozen=True)
class Mention:
    """One `@screen_name` in a post's text that names a known user (code point offsets)."""

    user_id: str
    screen_name: str
    start: int
    end: int


@dataclass(frozen=True)
class Post:
    """A public post (tweet): a user's mention of the bot, or the bot's own post or reply."""

    id: str
    author_id: str
    text: str
    created_ms: int
    conversation_id: str
    in_reply_to_tweet_id: str | None = None
    in_reply_to_user_id: str | None = None
    mentions: tuple[Mention, ...] = ()
    # A retweet: the id of the original post (which `retweeted_text` holds the text of).
    retweeted_status_id: str | None = None
    retweeted_text: str | None = None
    # Account Activity's `user_has_blocked` and `is_blocked_by` exactly as given (bool or
    # string); None: absent from the envelope.
    user_has_blocked: bool | str | None = None
    is_blocked_by: bool | str | None = None

    @property
    def mentioned_ids(self) -> tuple[str, ...]:
        return tuple(m.user_id for m in self.mentions)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author_id": self.author_id,
            "text": self.text,
            "in_reply_to_tweet_id": self.in_reply_to_tweet_id,
            "created_at": iso_timestamp(self.created_ms / 1000),
            "conversation_id": self.conversation_id,
            "retweeted_status_id": self.retweeted_status_id,
        }


class PostBook:
    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._posts: list[Post] = []

    def add(self, post: Post) -> Post:
        self._posts.append(post)
        self._feed.notify("post", post.to_json())
        return post

    def by_id(self, post_id: str) -> Post | None:
        return next((p for p in reversed(self._posts) if p.id == post_id), None)

    def latest_by(self, user_id: str) -> Post | None:
        return next((p for p in reversed(self._posts) if p.author_id == user_id), None)

    def thread(self, user_id: str | None) -> list[Post]:
        """Posts oldest first; with a user: theirs, those naming them, and replies to them."""
        if user_id is None:
            return list(self._posts)
        return [
            p
            for p in self._posts
            if user_id in (p.author_id, p.in_reply_to_user_id) or user_id in p.mentioned_ids
        ]

    def clear(self) -> None:
        self._posts.clear()
