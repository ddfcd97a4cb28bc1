"""Contributions, epochs, payouts and carried dues."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.prepared import Prepared
from gpupool.store.tables import contributions, entries, reward_carry, reward_epochs


@dataclass(frozen=True, slots=True)
class Payout:
    """One owner's payout of one epoch: a credit entry of the epoch's ledger posting."""

    epoch: int
    owner: str
    amount_micro: int
    created_at: float
    status: str = "completed"  # paid by the same transaction that closed the epoch


# One statement and one round trip for 10^5 rows (asyncpg sends arrays binary).
_PG_CARRY = text(
    "INSERT INTO reward_carry (owner, carried_micro) "
    "SELECT u.o, u.c FROM unnest(CAST(:owners AS text[]), CAST(:amounts AS bigint[])) AS u(o, c)"
)


def _once_per_ref(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing(index_elements=["source", "ref"])


# GGB's batch and network figures come only with a contribution a node records itself (one at a time);
# the hub's own rows leave them at their default 0.
_REPORTED_ONLY = ("batches_processed", "network_upload_mb", "network_download_mb")
CONTRIBUTION_COLUMNS = tuple(c.name for c in contributions.columns if c.name not in ("id", *_REPORTED_ONLY))
_ADD_CONTRIBUTIONS = Prepared(
    lambda dialect: _once_per_ref(
        (pg_insert if dialect == "postgresql" else sqlite_insert)(contributions).values(
            {c: bindparam(c) for c in CONTRIBUTION_COLUMNS}
        )
    )
)


class RewardsRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    async def add_contribution(self, values: dict[str, Any]) -> bool:
        """One contribution per (source, ref): a result reported twice counts once."""
        stmt = self._insert(contributions).values(**values)
        return (await self.conn.execute(_once_per_ref(stmt))).rowcount == 1

    async def add_contributions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many at once, each with every column of ``CONTRIBUTION_COLUMNS``; those already recorded
        are left as they are."""
        await _ADD_CONTRIBUTIONS.many(self.conn, rows)

    async def scores_for_epoch(self, epoch: int, *, include_reported: bool = False) -> dict[str, int]:
        """Each owner's summed score in ``epoch``, aggregated by the database; contributions nodes
        recorded themselves (``reported``) only when asked."""
        if self.conn.dialect.name == "postgresql":
            # 10^5 owners' sums fit in memory: a hash aggregate instead of a sort spilled to disk
            # (~40 % faster at 10^6 rows). LOCAL: ends with this transaction.
            await self.conn.execute(text("SET LOCAL work_mem = '64MB'"))
        rows = await self.conn.execute(
            select(contributions.c.owner, func.sum(contributions.c.compute_score))
            .where(
                contributions.c.epoch == epoch,
                *(() if include_reported else (contributions.c.source != "reported",)),
            )
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
                    func.coalesce(
                        func.sum(contributions.c.network_upload_mb + contributions.c.network_download_mb), 0
                    ),
                    func.count().filter(contributions.c.source == "reported"),
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
            "total_network_mb": int(total[6]),
            "reported_count": int(total[7]),  # recorded by the node itself: counted only if so configured
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

    async def set_paid(
        self, epoch: int, paid_micro: int, posting_id: int | None, root_event: dict[str, Any] | None
    ) -> None:
        await self.conn.execute(
            reward_epochs.update()
            .where(reward_epochs.c.epoch == epoch)
            .values(
                paid_micro=paid_micro,
                posting_id=posting_id,
                root_event=json.dumps(root_event) if root_event else None,
            )
        )

    async def root_event(self, epoch: int) -> dict[str, Any] | None:
        """The hub-signed statement of an epoch's Merkle root, or None (nothing paid)."""
        text_ = (
            await self.conn.execute(select(reward_epochs.c.root_event).where(reward_epochs.c.epoch == epoch))
        ).scalar()
        return json.loads(text_) if text_ else None

    async def epoch_payouts(self, epoch: int) -> list[tuple[str, int]]:
        """An epoch's ``(owner, amount_micro)`` payouts, unordered (sorted in Python, not by collation)."""
        rows = await self.conn.execute(
            select(entries.c.account, entries.c.amount_micro)
            .select_from(entries.join(reward_epochs, reward_epochs.c.posting_id == entries.c.posting_id))
            .where(reward_epochs.c.epoch == epoch, entries.c.amount_micro > 0)
        )
        return [(o, int(a)) for o, a in rows]

    async def carried(self) -> dict[str, int]:
        return {
            o: int(c)
            for o, c in await self.conn.execute(select(reward_carry.c.owner, reward_carry.c.carried_micro))
        }

    async def replace_carried(self, carried: dict[str, int]) -> None:
        await self.conn.execute(reward_carry.delete())
        kept = {o: c for o, c in carried.items() if c}
        if not kept:
            return
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(_PG_CARRY, {"owners": list(kept), "amounts": list(kept.values())})
        else:
            await self.conn.execute(
                insert(reward_carry), [{"owner": o, "carried_micro": c} for o, c in kept.items()]
            )

    async def payouts_of(self, owner: str) -> list[Payout]:
        """Every epoch payout to ``owner``, oldest first (the credits of the epochs' postings)."""
        rows = await self.conn.execute(
            select(reward_epochs.c.epoch, entries.c.amount_micro, reward_epochs.c.distributed_at)
            .select_from(entries.join(reward_epochs, reward_epochs.c.posting_id == entries.c.posting_id))
            .where(entries.c.account == owner)
            .order_by(reward_epochs.c.epoch)
        )
        return [Payout(int(e), owner, int(a), float(t)) for e, a, t in rows]

    async def epochs(self) -> list[int]:
        return [int(e) for (e,) in await self.conn.execute(select(reward_epochs.c.epoch))]
