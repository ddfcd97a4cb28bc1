"""User and refresh-token storage."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.errors import Conflict
from gpupool.store.tables import refresh_families, refresh_tokens, users


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    password_hash: str
    role: str
    created_at: float
    disabled: bool
    generation: int = 0
    deleted_at: float | None = None

    @property
    def active(self) -> bool:
        """May sign in and use tokens: neither disabled nor deleted."""
        return not self.disabled and self.deleted_at is None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    id: str
    family_id: str
    user_id: int
    secret_hash: str
    issued_at: float
    expires_at: float
    used_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    """One login's chain of refresh tokens: who, under which user generation, since when."""

    id: str
    user_id: int
    generation: int
    auth_time: float
    revoked_at: float | None


class UsersRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(self, username: str, password_hash: str, role: str, now: float) -> UserRecord:
        try:
            result = await self.conn.execute(
                insert(users)
                .values(
                    username=username, password_hash=password_hash, role=role, created_at=now, disabled=False
                )
                .returning(users)
            )
        except IntegrityError as exc:
            raise Conflict(f"user {username!r} already exists", code="user_exists") from exc
        return UserRecord(**result.one()._asdict())

    async def by_username(self, username: str) -> UserRecord | None:
        row = (await self.conn.execute(select(users).where(users.c.username == username))).first()
        return UserRecord(**row._asdict()) if row else None

    async def by_id(self, user_id: int) -> UserRecord | None:
        row = (await self.conn.execute(select(users).where(users.c.id == user_id))).first()
        return UserRecord(**row._asdict()) if row else None

    async def count_role(self, role: str) -> int:
        return int((await self.conn.execute(select(func.count()).where(users.c.role == role))).scalar() or 0)

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self.conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )

    async def set_state(self, user_id: int, *, disabled: bool | None = None, bump: bool = False) -> None:
        """Disable or enable a user; ``bump`` ends every token issued so far (a new generation)."""
        values: dict[str, object] = {}
        if disabled is not None:
            values["disabled"] = disabled
        if bump:
            values["generation"] = users.c.generation + 1
        if values:
            await self.conn.execute(update(users).where(users.c.id == user_id).values(**values))

    async def tombstone(self, user: UserRecord, now: float) -> None:
        """Delete a user but keep the row under a name no one can take, so its id is never reused."""
        await self.conn.execute(
            update(users)
            .where(users.c.id == user.id)
            .values(
                username=f"~deleted~{user.id}",
                password_hash="!",
                disabled=True,
                deleted_at=now,
                generation=users.c.generation + 1,
            )
        )

    async def add_family(self, family: FamilyRecord) -> None:
        await self.conn.execute(
            insert(refresh_families).values(
                id=family.id,
                user_id=family.user_id,
                generation=family.generation,
                auth_time=family.auth_time,
                revoked_at=family.revoked_at,
            )
        )

    async def lock_family(self, family_id: str) -> FamilyRecord | None:
        """The family row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
        row = (
            await self.conn.execute(
                select(refresh_families).where(refresh_families.c.id == family_id).with_for_update()
            )
        ).first()
        return FamilyRecord(**row._asdict()) if row else None

    async def revoke_family_at(self, family_id: str, now: float) -> None:
        await self.conn.execute(
            update(refresh_families).where(refresh_families.c.id == family_id).values(revoked_at=now)
        )
        await self.revoke_family(family_id)

    async def add_refresh(self, record: RefreshRecord) -> None:
        await self.conn.execute(insert(refresh_tokens).values(**_as_row(record)))

    async def refresh_by_id(self, token_id: str) -> RefreshRecord | None:
        row = (await self.conn.execute(select(refresh_tokens).where(refresh_tokens.c.id == token_id))).first()
        return RefreshRecord(**row._asdict()) if row else None

    async def spend_refresh(self, token_id: str, now: float) -> bool:
        """Mark a refresh token used; False when it was already used or revoked (a reuse)."""
        result = await self.conn.execute(
            update(refresh_tokens)
            .where(
                refresh_tokens.c.id == token_id,
                refresh_tokens.c.used_at.is_(None),
                refresh_tokens.c.revoked.is_(False),
            )
            .values(used_at=now)
        )
        return result.rowcount == 1

    async def revoke_family(self, family_id: str) -> None:
        await self.conn.execute(
            update(refresh_tokens).where(refresh_tokens.c.family_id == family_id).values(revoked=True)
        )


def _as_row(record: RefreshRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "family_id": record.family_id,
        "user_id": record.user_id,
        "secret_hash": record.secret_hash,
        "issued_at": record.issued_at,
        "expires_at": record.expires_at,
        "used_at": record.used_at,
        "revoked": record.revoked,
    }
