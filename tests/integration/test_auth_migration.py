"""Upgrading a hub with live sessions: refresh families are carried over, revoked ones stay revoked.

On SQLite and PostgreSQL: the schema of the revision before the auth migration, a user with two
refresh families (one revoked by a reuse), then the upgrade, then the hub serving those tokens.
"""

from __future__ import annotations

import hashlib

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gpupool.core.ports import FakeClock
from gpupool.store.db import Database, _alembic_config
from tests.conftest import HubClient

BEFORE_AUTH = "0009"
LIVE, REVOKED = "a" * 24, "c" * 24  # token ids as the hub makes them: 24 hex digits


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def test_existing_refresh_families_survive_the_upgrade(
    db_url: str, hub_client_factory, clock: FakeClock
) -> None:
    old = Database(db_url)
    async with old.engine.begin() as conn:

        def to_before(sync: Connection) -> None:
            command.upgrade(_alembic_config(sync), BEFORE_AUTH)

        await conn.run_sync(to_before)
        now = clock.now()
        await conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, role, created_at, disabled) "
                "VALUES (100, 'olduser', 'x', 'user', :now, false)"
            ),
            {"now": now},
        )
        rows = [
            (LIVE, "famlive", _digest("s1"), None, False),
            ("b" * 24, "famgone", _digest("s2"), now, True),
            (REVOKED, "famgone", _digest("s3"), None, True),
        ]
        for token_id, family, secret_hash, used_at, revoked in rows:
            await conn.execute(
                text(
                    "INSERT INTO refresh_tokens (id, family_id, user_id, secret_hash, issued_at, "
                    "expires_at, used_at, revoked) VALUES (:id, :fam, 100, :h, :now, :exp, :used, :rev)"
                ),
                {
                    "id": token_id,
                    "fam": family,
                    "h": secret_hash,
                    "now": now,
                    "exp": now + 86400,
                    "used": used_at,
                    "rev": revoked,
                },
            )
    await old.dispose()

    hub: HubClient = await hub_client_factory()  # starts with the upgrade to head
    live = await hub.http.post("/v1/auth/refresh", json={"refresh_token": f"{LIVE}.s1"})
    assert live.status_code == 200, live.text
    me = await hub.http.get("/v1/me", headers={"Authorization": f"Bearer {live.json()['access_token']}"})
    assert me.json()["username"] == "olduser"
    gone = await hub.http.post("/v1/auth/refresh", json={"refresh_token": f"{REVOKED}.s3"})
    assert gone.status_code == 401
    assert gone.json()["error"]["code"] == "token_revoked"  # its family came over revoked
