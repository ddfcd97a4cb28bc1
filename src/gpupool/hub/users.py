"""An admin's hold over users: disable, enable, delete, and end every session of a user.

Each change that must cut a user off bumps the user's generation, which every access and refresh
token names: their tokens stop working on this hub at once and on other replicas within the user
state cache's TTL. A deleted user stays as a tombstone under a name no one can take, so a new user of
the same name gets a new id and the old tokens never match it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.ledger import hold_account, username_account, validate_username
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.errors import Conflict, Forbidden, NotFound
from gpupool.hub.user_state import UserStateCache
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.users_repo import UserRecord, UsersRepo


class UserAdmin:
    def __init__(self, db: Database, clock: Clock, users: UserStateCache) -> None:
        self.db = db
        self.clock = clock
        self.users = users

    async def disable(self, actor: Principal, username: str) -> UserRecord:
        """The user can no longer sign in, and every token they hold stops working."""
        return await self._change(actor, username, disabled=True, bump=True)

    async def enable(self, actor: Principal, username: str) -> UserRecord:
        """The user may sign in again; tokens from before the disable stay dead."""
        return await self._change(actor, username, disabled=False, bump=False)

    async def revoke_sessions(self, actor: Principal, username: str) -> UserRecord:
        """Every access and refresh token of the user stops working; the password still signs in."""
        return await self._change(actor, username, disabled=None, bump=True, allow_self=True)

    async def delete(self, actor: Principal, username: str) -> None:
        """Delete a user whose accounts are empty (money is never destroyed with its owner)."""
        _require_admin(actor)
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> int:
            repo = UsersRepo(conn)
            user = await _target(repo, actor, username)
            account = username_account(user.username)
            balances = await LedgerRepo(conn).balances([account, hold_account(account)])
            if any(balances.values()):
                raise Conflict(
                    f"user {username!r} still holds {sum(balances.values())} micro-units; "
                    "move them out first",
                    code="account_not_empty",
                    details={"balances_micro": balances},
                )
            await repo.tombstone(user, now)
            return user.id

        self.users.invalidate(await self.db.run(work))

    async def _change(
        self, actor: Principal, username: str, *, disabled: bool | None, bump: bool, allow_self: bool = False
    ) -> UserRecord:
        _require_admin(actor)

        async def work(conn: AsyncConnection) -> UserRecord:
            repo = UsersRepo(conn)
            user = await _target(repo, actor, username, allow_self)
            await repo.set_state(user.id, disabled=disabled, bump=bump)
            changed = await repo.by_id(user.id)
            assert changed is not None
            return changed

        changed = await self.db.run(work)
        self.users.invalidate(changed.id)
        return changed


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("only an admin can manage users")


async def _target(repo: UsersRepo, actor: Principal, username: str, allow_self: bool = False) -> UserRecord:
    validate_username(username)  # 422 naming the field; also keeps NUL bytes away from PostgreSQL
    user = await repo.by_username(username)
    if user is None or user.deleted_at is not None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    if user.id == actor.user_id and not allow_self:
        raise Conflict("an admin cannot disable or delete their own user", code="own_user")
    return user
