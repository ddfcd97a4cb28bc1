"""Proof-of-compute storage: rounds, submitted batches, the unique nonces they claim, per-node results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.tables import miners, poc_batches, poc_nonces, poc_results, poc_rounds

OPEN, CLOSED, VALIDATED = "open", "closed", "validated"


@dataclass(frozen=True, slots=True)
class RoundRecord:
    block_height: int
    block_hash: str
    params: dict[str, Any]
    params_name: str | None
    r_target: float
    fraud_threshold: float
    batch_size: int
    status: str
    opened_at: float
    closes_at: float
    closed_at: float | None
    opened_by: str


@dataclass(frozen=True, slots=True)
class NodeClaims:
    """One node's stored claims for a round, batch by batch in the order they arrived."""

    miner_id: str
    public_key: str
    node_id: int
    n_batches: int
    batches: list[tuple[list[int], list[float]]]


@dataclass(frozen=True, slots=True)
class ResultRecord:
    block_height: int
    miner_id: str
    public_key: str
    n_batches: int
    n_nonces: int
    n_sampled: int
    n_invalid: int
    p_value: float
    fraud: bool
    weight: int
    validated_at: float


def _round(row: Any) -> RoundRecord:
    return RoundRecord(**{**row._asdict(), "params": json.loads(row.params)})


class PocRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    # --- rounds ---------------------------------------------------------------------------------------

    async def last_height(self) -> int:
        return int((await self.conn.execute(select(func.max(poc_rounds.c.block_height)))).scalar() or 0)

    async def add_round(self, record: RoundRecord) -> None:
        values = {k: getattr(record, k) for k in RoundRecord.__slots__}
        await self.conn.execute(insert(poc_rounds).values(**{**values, "params": json.dumps(record.params)}))

    async def round(self, height: int, *, share_lock: bool = False) -> RoundRecord | None:
        """A round; ``share_lock`` holds it against a concurrent close until the transaction ends."""
        stmt = select(poc_rounds).where(poc_rounds.c.block_height == height)
        if share_lock and self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)
        row = (await self.conn.execute(stmt)).first()
        return _round(row) if row is not None else None

    async def open_round(self) -> RoundRecord | None:
        row = (
            await self.conn.execute(
                select(poc_rounds)
                .where(poc_rounds.c.status == OPEN)
                .order_by(poc_rounds.c.block_height.desc())
                .limit(1)
            )
        ).first()
        return _round(row) if row is not None else None

    async def heights(self, status: str, closes_before: float | None = None) -> list[int]:
        stmt = select(poc_rounds.c.block_height).where(poc_rounds.c.status == status)
        if closes_before is not None:
            stmt = stmt.where(poc_rounds.c.closes_at <= closes_before)
        return [int(h) for (h,) in await self.conn.execute(stmt.order_by(poc_rounds.c.block_height))]

    async def close(self, height: int, now: float) -> bool:
        """Stop accepting batches for an open round; False when it was not open."""
        result = await self.conn.execute(
            update(poc_rounds)
            .where(poc_rounds.c.block_height == height, poc_rounds.c.status == OPEN)
            .values(status=CLOSED, closed_at=now)
        )
        return result.rowcount == 1

    async def mark_validated(self, height: int) -> bool:
        """Claim a closed round's validation: True for exactly one caller (across replicas too)."""
        result = await self.conn.execute(
            update(poc_rounds)
            .where(poc_rounds.c.block_height == height, poc_rounds.c.status == CLOSED)
            .values(status=VALIDATED)
        )
        return result.rowcount == 1

    # --- batches ----------------------------------------------------------------------------------------

    async def add_batch(
        self,
        height: int,
        public_key: str,
        miner_id: str,
        node_id: int,
        claims: dict[int, float],
        n_nonces: int,
        event_id: str,
        now: float,
    ) -> tuple[int, int, int]:
        """Store a batch and its nonces not claimed before; returns (batch id, new nonces, unique total)."""
        batch_id = int(
            (
                await self.conn.execute(
                    insert(poc_batches)
                    .values(
                        block_height=height,
                        public_key=public_key,
                        miner_id=miner_id,
                        node_id=node_id,
                        n_nonces=n_nonces,
                        n_new=0,
                        event_id=event_id,
                        received_at=now,
                    )
                    .returning(poc_batches.c.id)
                )
            ).scalar_one()
        )
        before = await self.unique_count(height, public_key)
        rows = [
            {"block_height": height, "public_key": public_key, "nonce": n, "dist": d, "batch_id": batch_id}
            for n, d in claims.items()
        ]
        if rows:
            stmt = self._insert(poc_nonces).on_conflict_do_nothing(
                index_elements=["block_height", "public_key", "nonce"]
            )
            await self.conn.execute(stmt, rows)
        total = await self.unique_count(height, public_key)
        await self.conn.execute(
            update(poc_batches).where(poc_batches.c.id == batch_id).values(n_new=total - before)
        )
        return batch_id, total - before, total

    async def unique_count(self, height: int, public_key: str) -> int:
        stmt = select(func.count()).where(
            poc_nonces.c.block_height == height, poc_nonces.c.public_key == public_key
        )
        return int((await self.conn.execute(stmt)).scalar_one())

    async def claims(self, height: int) -> list[NodeClaims]:
        """Every node's unique claims for a round, grouped into the batches that first made them."""
        batches = await self.conn.execute(
            select(
                poc_batches.c.public_key,
                poc_batches.c.miner_id,
                poc_batches.c.node_id,
                func.count(),
            )
            .where(poc_batches.c.block_height == height)
            .group_by(poc_batches.c.public_key, poc_batches.c.miner_id, poc_batches.c.node_id)
        )
        nodes: dict[str, NodeClaims] = {}
        for key, miner_id, node_id, count in batches:
            if key in nodes:  # one key under several node_ids: keep one entry, add up its batches
                prev = nodes[key]
                nodes[key] = NodeClaims(prev.miner_id, key, prev.node_id, prev.n_batches + int(count), [])
            else:
                nodes[key] = NodeClaims(miner_id, key, int(node_id), int(count), [])
        rows = await self.conn.execute(
            select(poc_nonces.c.public_key, poc_nonces.c.batch_id, poc_nonces.c.nonce, poc_nonces.c.dist)
            .where(poc_nonces.c.block_height == height)
            .order_by(poc_nonces.c.public_key, poc_nonces.c.batch_id, poc_nonces.c.nonce)
        )
        grouped: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        for key, batch_id, nonce, dist in rows:
            nonces, dists = grouped.setdefault((key, int(batch_id)), ([], []))
            nonces.append(int(nonce))
            dists.append(float(dist))
        for (key, _batch_id), part in grouped.items():
            if key in nodes:
                nodes[key].batches.append(part)
        return sorted(nodes.values(), key=lambda n: n.miner_id)

    # --- results ----------------------------------------------------------------------------------------

    async def add_results(self, results: Sequence[ResultRecord]) -> None:
        if not results:
            return
        stmt = self._insert(poc_results).on_conflict_do_nothing(index_elements=["block_height", "miner_id"])
        await self.conn.execute(stmt, [{k: getattr(r, k) for k in ResultRecord.__slots__} for r in results])

    async def results(self, height: int) -> list[ResultRecord]:
        rows = await self.conn.execute(
            select(poc_results).where(poc_results.c.block_height == height).order_by(poc_results.c.miner_id)
        )
        return [ResultRecord(**row._asdict()) for row in rows]

    async def set_poc_weight(self, miner_id: str, weight: int) -> None:
        await self.conn.execute(update(miners).where(miners.c.miner_id == miner_id).values(poc_weight=weight))
