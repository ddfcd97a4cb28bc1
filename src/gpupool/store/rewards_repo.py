"""Contributions, epochs, payouts and carried dues."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.tables import contributions, payouts, reward_carry, reward_epochs


@dataclass(frozen=True, slots=True)
class Payout:
    id: int
    epoch: int
    owner: str
    amount_micro: int
    status: str
    receipt: dict[str, Any]
    created_at: float


class RewardsRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    async def add_contribution(self, values: dict[str, Any]) -> bool:
        """One contribution per (source, ref): a result reported twice counts once."""
        stmt = (
            self._insert(contributions)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["source", "ref"])
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def scores_for_epoch(self, epoch: int) -> dict[str, int]:
        rows = await self.conn.execute(
            select(contributions.c.owner, func.sum(contributions.c.compute_score))
            .where(contributions.c.epoch == epoch)
            .group_by(contributions.c.owner)
        )
        return {owner: int(total) for owner, total in rows}

    async def stats(self, node_id: str | None, owner: str | None) -> dict[str, Any]:
        cond = contributions.c.node_id == node_id if node_id else contributions.c.owner == owner
        total = (
            await self.conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(contributions.c.duration_seconds), 0.0),
                    func.coalesce(func.sum(contributions.c.samples_processed), 0),
                    func.coalesce(func.sum(contributions.c.compute_score), 0),
                    func.avg(contributions.c.avg_gpu_usage_percent),
                    func.avg(contributions.c.avg_cpu_usage_percent),
                ).where(cond)
            )
        ).one()
        epochs = await self.conn.execute(
            select(contributions.c.epoch, func.count(), func.sum(contributions.c.compute_score))
            .where(cond)
            .group_by(contributions.c.epoch)
            .order_by(contributions.c.epoch)
        )
        return {
            "contribution_count": int(total[0]),
            "total_compute_seconds": float(total[1]),
            "total_samples_processed": int(total[2]),
            "total_compute_score": int(total[3]),
            "avg_gpu_usage_percent": float(total[4]) if total[4] is not None else None,
            "avg_cpu_usage_percent": float(total[5]) if total[5] is not None else None,
            "epochs": [
                {"epoch": int(e), "contributions": int(n), "compute_score": int(s)} for e, n, s in epochs
            ],
        }

    async def claim_epoch(self, epoch: int, emission_micro: int, now: float) -> bool:
        """True once per epoch: the row that makes a second distribution of it a no-op."""
        stmt = (
            self._insert(reward_epochs)
            .values(epoch=epoch, emission_micro=emission_micro, paid_micro=0, distributed_at=now)
            .on_conflict_do_nothing(index_elements=["epoch"])
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def set_paid(self, epoch: int, paid_micro: int) -> None:
        await self.conn.execute(
            reward_epochs.update().where(reward_epochs.c.epoch == epoch).values(paid_micro=paid_micro)
        )

    async def carried(self) -> dict[str, int]:
        return {
            o: int(c)
            for o, c in await self.conn.execute(select(reward_carry.c.owner, reward_carry.c.carried_micro))
        }

    async def replace_carried(self, carried: dict[str, int]) -> None:
        await self.conn.execute(reward_carry.delete())
        if carried:
            await self.conn.execute(
                insert(reward_carry), [{"owner": o, "carried_micro": c} for o, c in carried.items() if c]
            )

    async def add_payouts(self, epoch: int, rows: list[tuple[str, int, dict[str, Any]]], now: float) -> None:
        await self.conn.execute(
            insert(payouts),
            [
                {
                    "epoch": epoch,
                    "owner": o,
                    "amount_micro": a,
                    "status": "completed",
                    "receipt": json.dumps(r),
                    "created_at": now,
                }
                for o, a, r in rows
            ],
        )

    async def add_payout(
        self, epoch: int, owner: str, amount: int, receipt: dict[str, Any], now: float
    ) -> int:
        result = await self.conn.execute(
            insert(payouts)
            .values(
                epoch=epoch,
                owner=owner,
                amount_micro=amount,
                status="completed",
                receipt=json.dumps(receipt),
                created_at=now,
            )
            .returning(payouts.c.id)
        )
        return int(result.scalar_one())

    async def payouts_of(self, owner: str) -> list[Payout]:
        rows = await self.conn.execute(select(payouts).where(payouts.c.owner == owner).order_by(payouts.c.id))
        return [
            Payout(r.id, r.epoch, r.owner, r.amount_micro, r.status, json.loads(r.receipt), r.created_at)
            for r in rows
        ]

    async def epochs(self) -> list[int]:
        return [int(e) for (e,) in await self.conn.execute(select(reward_epochs.c.epoch))]
