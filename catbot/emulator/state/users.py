"""The accounts the emulator knows: the bot and every user who wrote or was written to."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from catbot.emulator.state.common import now_ms


@dataclass
class UserProfile:
    id: str
    name: str
    screen_name: str
    created_timestamp: str


class Users(Mapping[str, UserProfile]):
    """Read like a mapping by id (the payload builders take any mapping); grown by `ensure`."""

    def __init__(self) -> None:
        self._by_id: dict[str, UserProfile] = {}

    def __getitem__(self, user_id: str) -> UserProfile:
        return self._by_id[user_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def ensure(self, user_id: str, name: str | None = None) -> UserProfile:
        """The user, made up the first time it is named; `name` renames it."""
        profile = self._by_id.get(user_id)
        if profile is None:
            profile = UserProfile(
                id=user_id,
                name=name or f"User {user_id}",
                screen_name=f"user{user_id}",
                created_timestamp=str(now_ms()),
            )
            self._by_id[user_id] = profile
        elif name:
            profile.name = name
        return profile

    def known(self, user_ids: Iterable[str]) -> list[UserProfile]:
        """Those of `user_ids` the emulator knows, in the order given."""
        return [self._by_id[i] for i in user_ids if i in self._by_id]

    def by_screen_name(self, screen_name: str) -> UserProfile | None:
        wanted = screen_name.lower()
        return next((u for u in self._by_id.values() if u.screen_name.lower() == wanted), None)
