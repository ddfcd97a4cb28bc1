"""Account-bound nodes, self-service owner API keys, GGB's contribution fields, prices named in micro.

A node admitted by an account's credential (an owner API key, a user's token) has no key of its own:
``miners.pubkey`` becomes nullable and ``miners.identity`` says how a node was admitted (existing rows
are ``signed``). Owners may be ``user:<name>`` accounts, so owner columns widen to the ledger's 80.
API keys remember who made them and whether they admit a node in allowlist mode (keys an admin
issued did, and still do). A node's stored spec names its price ``price_micro_per_ksec``.

SQLite rebuilds ``miners`` to relax NOT NULL; dropping the old table fires ``ON DELETE CASCADE`` on
``node_sessions``, so the sessions are copied aside and put back.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SESSIONS = "SELECT token_hash, miner_id, expires_at, revoked FROM node_sessions"


def upgrade() -> None:
    bind = op.get_bind()
    sessions = bind.execute(sa.text(_SESSIONS)).fetchall() if bind.dialect.name == "sqlite" else []
    with op.batch_alter_table("miners") as batch:
        batch.add_column(sa.Column("identity", sa.String(16), nullable=False, server_default="signed"))
        batch.add_column(sa.Column("bound_to", sa.String(80), nullable=True))
        batch.alter_column("pubkey", existing_type=sa.String(64), nullable=True)
        batch.alter_column("owner", existing_type=sa.String(42), type_=sa.String(80))
    if sessions:
        bind.execute(
            sa.text(
                "INSERT OR IGNORE INTO node_sessions (token_hash, miner_id, expires_at, revoked) "
                "VALUES (:token_hash, :miner_id, :expires_at, :revoked)"
            ),
            [row._asdict() for row in sessions],
        )
    with op.batch_alter_table("owner_api_keys") as batch:
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("admits", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.alter_column("owner", existing_type=sa.String(42), type_=sa.String(80))
    with op.batch_alter_table("allowlist") as batch:
        batch.alter_column("entry", existing_type=sa.String(64), type_=sa.String(80))
    with op.batch_alter_table("contributions") as batch:
        batch.alter_column("owner", existing_type=sa.String(42), type_=sa.String(80))
        for column in ("batches_processed", "network_upload_mb", "network_download_mb"):
            batch.add_column(sa.Column(column, sa.BigInteger, nullable=False, server_default="0"))
    _rename_price("price_token_per_ksec", "price_micro_per_ksec")


def downgrade() -> None:
    _rename_price("price_micro_per_ksec", "price_token_per_ksec")
    with op.batch_alter_table("contributions") as batch:
        for column in ("batches_processed", "network_upload_mb", "network_download_mb"):
            batch.drop_column(column)
    with op.batch_alter_table("owner_api_keys") as batch:
        batch.drop_column("admits")
        batch.drop_column("created_by")
    with op.batch_alter_table("miners") as batch:
        batch.drop_column("bound_to")
        batch.drop_column("identity")


def _rename_price(old: str, new: str) -> None:
    bind = op.get_bind()
    for miner_id, spec in bind.execute(sa.text("SELECT miner_id, spec FROM miners")).fetchall():
        data = json.loads(spec)
        if old in data:
            data[new] = data.pop(old)
            bind.execute(
                sa.text("UPDATE miners SET spec = :spec WHERE miner_id = :miner_id"),
                {"spec": json.dumps(data, sort_keys=True), "miner_id": miner_id},
            )
