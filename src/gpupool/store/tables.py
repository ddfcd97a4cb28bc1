"""SQLAlchemy Core tables: the schema every repository reads and writes.

Times are epoch seconds (``Float``) so that the injected clock and the database agree; money is
``BigInteger`` micro-units. The migrations in ``migrations/versions`` create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT autoincrement on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    # Every token names the generation it was issued under; disabling, deleting or "revoke all
    # sessions" bumps it, so older tokens stop working. A deleted user stays as a renamed tombstone so
    # that its id is never handed out again (SQLite would reuse the highest rowid).
    Column("generation", Integer, nullable=False, default=0),
    Column("deleted_at", Float, nullable=True),
)

refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("auth_time", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("family_id", String(32), nullable=False, index=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("type", String(16), nullable=False),
    Column("balance_micro", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    CheckConstraint("balance_micro >= 0 OR id = 'system:issuance'", name="non_negative"),
)

postings = Table(
    "postings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("scope", String(80), nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("source", String(80), nullable=True),
    Column("destination", String(80), nullable=True),
    Column("amount_micro", BigInteger, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("memo", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("scope", "idempotency_key", name="uq_postings_scope_key"),
    Index("ix_postings_source_id", "source", "id"),
    Index("ix_postings_destination_id", "destination", "id"),
)

entries = Table(
    "entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("posting_id", BigId, ForeignKey("postings.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("account", String(80), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount_micro", BigInteger, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("pubkey", String(64), primary_key=True),
    Column("owner", String(42), nullable=True),
    Column("node_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("signed", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

allowlist = Table(
    "allowlist",
    metadata,
    Column("entry", String(80), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

owner_api_keys = Table(
    "owner_api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("owner", String(80), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("label", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("created_by", String(64), nullable=True),  # the user who made it (none: an admin, before 0009)
    # issued by an admin: a node registered with it is admitted in allowlist mode
    Column("admits", Boolean, nullable=False, server_default=true()),
)

miners = Table(
    "miners",
    metadata,
    Column("miner_id", String(64), primary_key=True),
    Column("pubkey", String(64), nullable=True, unique=True),  # none for an account-bound node
    Column("owner", String(80), nullable=False, index=True),  # a 0x address or a user:<name> account
    # signed (its key signs), api_key or user_token (account-bound: admitted by an account's credential)
    Column("identity", String(16), nullable=False, server_default="signed"),
    Column("bound_to", String(80), nullable=True),  # the credential an account-bound node answers to
    Column("spec", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("trust", Float, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("poc_weight", BigInteger, nullable=False, default=0),
    Column("telemetry", Text, nullable=True),
    Column("registered_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

node_sessions = Table(
    "node_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "miner_id", String(64), ForeignKey("miners.miner_id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("expires_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

seen_events = Table(
    "seen_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("spec", Text, nullable=False),  # command, env, requirements as JSON
    Column("price_cap_micro_per_ksec", BigInteger, nullable=False),
    Column("timeout_sec", Float, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("miner_id", String(64), nullable=True, index=True),
    Column("submitted_at", Float, nullable=False),
    Column("assigned_at", Float, nullable=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("price_micro_per_ksec", BigInteger, nullable=True),  # the node's price when assigned
    Column("hold_micro", BigInteger, nullable=False),
    Column("charge_micro", BigInteger, nullable=True),
    Column("usage", Text, nullable=True),
    Column("artifacts", Text, nullable=True),
    # Listings newest first: a user's tasks, in some states, everyone's (admin), everyone's in some
    # states (and the live tasks a hub loads when it starts).
    Index("ix_tasks_owner_submitted_at", "owner", "submitted_at", "task_id"),
    Index("ix_tasks_owner_state", "owner", "state", "submitted_at", "task_id"),
    Index("ix_tasks_submitted_at", "submitted_at", "task_id"),
    Index("ix_tasks_state_submitted_at", "state", "submitted_at", "task_id"),
)

task_output = Table(
    "task_output",
    metadata,
    Column("task_id", String(32), ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("stream", String(8), nullable=False),
    Column("data", Text, nullable=False),
    Column("ts", Float, nullable=False),
)

contributions = Table(
    "contributions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("node_id", String(64), nullable=False, index=True),
    Column("owner", String(80), nullable=False, index=True),
    Column("source", String(8), nullable=False),  # task | poc | admin | reported (by the node itself)
    Column("ref", String(64), nullable=False),  # the task id, batch id or admin reason's key
    Column("epoch", BigInteger, nullable=False, index=True),
    Column("start_timestamp", Float, nullable=False),
    Column("end_timestamp", Float, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("avg_gpu_usage_percent", Float, nullable=True),
    Column("gpu_memory_used_mb", Float, nullable=True),
    Column("avg_cpu_usage_percent", Float, nullable=True),
    Column("memory_used_mb", Float, nullable=True),
    Column("samples_processed", BigInteger, nullable=False, default=0),
    Column("batches_processed", BigInteger, nullable=False, server_default="0"),
    Column("network_upload_mb", BigInteger, nullable=False, server_default="0"),
    Column("network_download_mb", BigInteger, nullable=False, server_default="0"),
    Column("compute_score", BigInteger, nullable=False),
    Column("recorded_by", String(64), nullable=False),
    Column("reason", Text, nullable=True),
    UniqueConstraint("source", "ref", name="uq_contribution_source_ref"),
)

reward_epochs = Table(
    "reward_epochs",
    metadata,
    Column("epoch", BigInteger, primary_key=True),
    Column("emission_micro", BigInteger, nullable=False),
    Column("paid_micro", BigInteger, nullable=False),
    Column("distributed_at", Float, nullable=False),
    # The posting that paid the epoch: its entries are the payouts (one per owner, pool leg aside).
    Column("posting_id", BigId, ForeignKey("postings.id"), nullable=True),
    # The hub-signed statement of the Merkle root over those payouts (``receipts.py``).
    Column("root_event", Text, nullable=True),
)

reward_carry = Table(
    "reward_carry",
    metadata,
    Column("owner", String(42), primary_key=True),
    Column("carried_micro", BigInteger, nullable=False),
)

poc_rounds = Table(
    "poc_rounds",
    metadata,
    Column("block_height", BigInteger, primary_key=True, autoincrement=False),
    Column("block_hash", String(64), nullable=False, unique=True),
    Column("params", Text, nullable=False),  # ModelParams as JSON
    Column("params_name", String(16), nullable=True),
    Column("r_target", Float, nullable=False),
    Column("fraud_threshold", Float, nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("status", String(12), nullable=False, index=True),  # open | closed | validated
    Column("opened_at", Float, nullable=False),
    Column("closes_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("opened_by", String(64), nullable=False),
)

poc_batches = Table(
    "poc_batches",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("block_height", BigInteger, ForeignKey("poc_rounds.block_height"), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("miner_id", String(64), nullable=False),
    Column("node_id", Integer, nullable=False),
    Column("n_nonces", Integer, nullable=False),
    Column("n_new", Integer, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    Index("ix_poc_batches_round_key", "block_height", "public_key"),
)

# One row per (round, key, nonce): the first claim of a nonce is the one kept and validated.
poc_nonces = Table(
    "poc_nonces",
    metadata,
    Column("block_height", BigInteger, primary_key=True, autoincrement=False),
    Column("public_key", String(64), primary_key=True),
    Column("nonce", BigInteger, primary_key=True, autoincrement=False),
    Column("dist", Float, nullable=False),
    Column("batch_id", BigInteger, nullable=False),
)

poc_results = Table(
    "poc_results",
    metadata,
    Column("block_height", BigInteger, primary_key=True, autoincrement=False),
    Column("miner_id", String(64), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("n_batches", Integer, nullable=False),
    Column("n_nonces", BigInteger, nullable=False),
    Column("n_sampled", Integer, nullable=False),
    Column("n_invalid", Integer, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("fraud", Boolean, nullable=False),
    Column("weight", BigInteger, nullable=False),
    Column("validated_at", Float, nullable=False),
)
