"""Alembic environment: runs migrations over the hub's own async engine (see ``store.db.migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from gpupool.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("gpupool migrations run through gpupool.store.db.migrate(), which passes a connection")
_run(connection)
