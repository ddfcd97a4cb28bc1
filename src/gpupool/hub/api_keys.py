"""Owner API keys: issued by an admin or made by an owner themself, shown once, stored hashed.

A key an admin issued admits the nodes registered with it in ``allowlist`` mode; a key an owner
made for themself only identifies them, so in that mode their nodes wait for an admin's approval.
"""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.model import Identity, Principal
from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, NotFound, Unauthenticated
from gpupool.hub.account_bound import AccountBinding, normalize_account
from gpupool.hub.sessions import token_hash
from gpupool.store.db import Database
from gpupool.store.registry_repo import ApiKeyRecord, RegistryRepo


class OwnerApiKeys:
    """The API-key half of the registry service (kept apart for size, sharing its database)."""

    db: Database
    clock: Clock

    async def create_api_key(
        self, owner: str, label: str, *, created_by: str | None = None, admits: bool = True
    ) -> tuple[ApiKeyRecord, str]:
        """A new owner API key; the key itself is returned once and only its hash is kept.

        ``admits``: a node registered with it is admitted in allowlist mode (an admin issued it).
        """
        record = ApiKeyRecord(
            id=secrets.token_hex(6),
            owner=normalize_account(owner),
            label=label,
            created_at=self.clock.now(),
            revoked_at=None,
            created_by=created_by,
            admits=admits,
        )
        key = "gpk_" + secrets.token_urlsafe(32)

        async def work(conn: AsyncConnection) -> None:
            await RegistryRepo(conn).add_api_key(record, token_hash(key))

        await self.db.run(work)
        return record, key

    async def create_own_api_key(
        self, principal: Principal, owner: str | None, name: str
    ) -> tuple[ApiKeyRecord, str]:
        """An owner's own key. It names the caller's account or an owner address (paying an address
        gives its holder money, never takes any); another user's account only an admin may name. An
        admin's key admits its nodes in allowlist mode; anyone else's waits for an approval."""
        account = normalize_account(owner) if owner else principal.account
        if account.startswith("user:") and account != principal.account and not principal.is_admin:
            raise Forbidden("a key may name your own account or an owner address", code="not_your_account")
        return await self.create_api_key(
            account, name, created_by=principal.username, admits=principal.is_admin
        )

    async def api_keys(self, owner: str | None, created_by: str | None = None) -> list[ApiKeyRecord]:
        owner = normalize_account(owner) if owner else None
        async with self.db.read() as conn:
            return await RegistryRepo(conn).api_keys(owner, created_by)

    async def revoke_api_key(self, key_id: str, created_by: str | None = None) -> None:
        """Revoke a key; with ``created_by``, only one that user made (self-service)."""

        async def work(conn: AsyncConnection) -> bool:
            repo = RegistryRepo(conn)
            if created_by is not None:
                record = await repo.api_key_by_id(key_id)
                if record is None or record.created_by != created_by:
                    return False
            return await repo.revoke_api_key(key_id, self.clock.now())

        if not await self.db.run(work):
            raise NotFound(f"no active API key {key_id}")

    async def api_key_binding(self, api_key: str) -> AccountBinding:
        """What an owner API key vouches for; an unknown or revoked key is a 401."""
        async with self.db.read() as conn:
            record = await RegistryRepo(conn).api_key(token_hash(api_key))
        if record is None:
            raise Unauthenticated("unknown or revoked API key", code="bad_api_key")
        return AccountBinding(
            owner=record.owner, identity=Identity.API_KEY, credential=record.id, admitted=record.admits
        )
