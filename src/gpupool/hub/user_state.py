"""What every authenticated request checks about its user, without a database round trip per call.

A token names its user's id and the user's generation at issue. The hub keeps each user's current
state (exists, active, generation, name) for ``ttl_s`` seconds and drops an entry at once when this
process changes the user. Another replica that changes the user is seen within ``ttl_s``: that TTL is
the longest a disabled or deleted user's token may still work on a replica that did not make the change.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.core.ports import Clock
from gpupool.store.db import Database
from gpupool.store.users_repo import UsersRepo

_PRUNE_ABOVE = 10_000  # entries; past this, expired ones are dropped on the next miss


@dataclass(frozen=True, slots=True)
class UserState:
    user_id: int
    username: str
    role: str
    generation: int
    active: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    state: UserState | None
    fetched_at: float


class UserStateCache:
    def __init__(self, db: Database, clock: Clock, ttl_s: float) -> None:
        self.db = db
        self.clock = clock
        self.ttl_s = ttl_s
        self._entries: dict[int, _Entry] = {}

    async def get(self, user_id: int) -> UserState | None:
        """The user's state, at most ``ttl_s`` old; None when no such user was ever created."""
        now = self.clock.now()
        entry = self._entries.get(user_id)
        if entry is not None and now - entry.fetched_at < self.ttl_s:
            return entry.state
        async with self.db.read() as conn:
            user = await UsersRepo(conn).by_id(user_id)
        state = (
            UserState(user.id, user.username, user.role, user.generation, user.active)
            if user is not None
            else None
        )
        if len(self._entries) > _PRUNE_ABOVE:
            self._prune(now)
        self._entries[user_id] = _Entry(state, now)
        return state

    def invalidate(self, user_id: int) -> None:
        """This process changed the user: the next request reads the database."""
        self._entries.pop(user_id, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, e in self._entries.items() if now - e.fetched_at >= self.ttl_s]
        for key in stale:
            del self._entries[key]
