"""Every DM and X Chat message, both ways, oldest first: what `/_emulator/messages` lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from catbot.emulator.state.common import ChangeFeed, IdGenerator, now_ms

Direction = Literal["in", "out"]
# "dm": a legacy DM; "xchat": an end-to-end encrypted X Chat message, its text as the
# recipient's app shows it once decrypted.
Channel = Literal["dm", "xchat"]


@dataclass(frozen=True)
class Message:
    id: str
    sender_id: str
    recipient_id: str
    text: str
    created_timestamp: str  # epoch milliseconds as a string, as X sends it
    direction: Direction
    source_app_id: str | None = None
    media_ids: tuple[str, ...] = ()
    channel: Channel = "dm"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "sender_id": self.sender_id,
            "recipient_id": self.recipient_id,
            "text": self.text,
            "created_timestamp": self.created_timestamp,
            "direction": self.direction,
            "channel": self.channel,
        }
        if self.media_ids:
            data["media_ids"] = list(self.media_ids)
        return data


class MessageLog:
    def __init__(self, ids: IdGenerator, feed: ChangeFeed) -> None:
        self._ids = ids
        self._feed = feed
        self._messages: list[Message] = []

    def record(
        self,
        *,
        sender_id: str,
        recipient_id: str,
        text: str,
        direction: Direction,
        created_timestamp: str | None = None,
        source_app_id: str | None = None,
        media_ids: tuple[str, ...] = (),
        channel: Channel = "dm",
        message_id: str | None = None,
    ) -> Message:
        """`message_id`: an id the sender chose (X Chat clients make their own); else a new
        snowflake."""
        message = Message(
            id=message_id or self._ids.next(),
            sender_id=sender_id,
            recipient_id=recipient_id,
            text=text,
            created_timestamp=created_timestamp or str(now_ms()),
            direction=direction,
            source_app_id=source_app_id,
            media_ids=media_ids,
            channel=channel,
        )
        self._messages.append(message)
        self._feed.notify("message", message.to_json())
        return message

    def conversation(self, user_id: str | None) -> list[Message]:
        """Every message with that user in it (None: every message at all)."""
        if user_id is None:
            return list(self._messages)
        return [m for m in self._messages if user_id in (m.sender_id, m.recipient_id)]

    def clear(self) -> None:
        self._messages.clear()
