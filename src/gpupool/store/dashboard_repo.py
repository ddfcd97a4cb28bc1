"""The few reads only the dashboard makes: users, recent PoC rounds, settlements since a posting."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.tables import postings, users

SETTLEMENT_PREFIX = "settle:"  # the idempotency key of every task's settlement (hub/tasks.py)


class DashboardRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def users(self, limit: int) -> list[dict[str, Any]]:
        """Users, oldest first, without their password hashes."""
        cols = (users.c.username, users.c.role, users.c.created_at, users.c.disabled)
        rows = await self.conn.execute(select(*cols).order_by(users.c.id).limit(limit))
        return [dict(r._mapping) for r in rows]

    async def settlements_after(self, posting_id: int) -> tuple[int, int]:
        """(tasks settled by postings after ``posting_id``, the newest posting id): a range of the key."""
        last = (await self.conn.execute(select(func.max(postings.c.id)))).scalar() or 0
        if last <= posting_id:
            return 0, int(last)
        count = (
            await self.conn.execute(
                select(func.count()).where(
                    postings.c.id > posting_id,
                    postings.c.id <= last,
                    postings.c.idempotency_key.like(SETTLEMENT_PREFIX + "%"),
                )
            )
        ).scalar()
        return int(count or 0), int(last)
