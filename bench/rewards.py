"""Closing one reward epoch over 100,000 nodes and 1,000,000 contributions, on SQLite and PostgreSQL.

Each backend gets a fresh, migrated database with 100k miners' contributions (10 per node on average,
random sizes) bulk-loaded into the epoch; then ``RewardService.distribute`` is timed: the aggregate by
owner, the integer split, one balanced posting for every payout, one signed receipt per payout, the
carried dues. Aim: under 10 s on PostgreSQL. The peer in the same run is the bare aggregate query the
distribution starts from (the least any implementation has to do), so the table shows what the rest
costs.

    python bench/rewards.py [--nodes 100000] [--contributions 1000000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import func, insert, select

from gpupool import crypto
from gpupool.core.ports import FakeClock
from gpupool.hub.rewards import RewardConfig, RewardService
from gpupool.store.db import Database
from gpupool.store.tables import contributions

PG_ADMIN_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
EPOCH_SEC = 300
START = 1_800_000_000.0


def address(i: int) -> str:
    return crypto.to_checksum_address("0x" + f"{i:040x}")


async def load(db: Database, nodes: int, rows: int) -> None:
    rng = random.Random(5)
    owners = [address(i + 1) for i in range(nodes)]
    epoch = int(START // EPOCH_SEC)
    batch = []

    async def flush() -> None:
        async with db.write() as conn:
            await conn.execute(insert(contributions), batch)
        batch.clear()

    for i in range(rows):
        n = i % nodes if i < nodes else rng.randrange(nodes)
        batch.append(
            {
                "node_id": f"n{n:06d}",
                "owner": owners[n],
                "source": "task",
                "ref": f"t{i}",
                "epoch": epoch,
                "start_timestamp": START,
                "end_timestamp": START + 60,
                "duration_seconds": 60.0,
                "samples_processed": 0,
                "compute_score": rng.randint(1_000, 3_600_000),
                "recorded_by": "bench",
            }
        )
        if len(batch) == 20_000:
            await flush()
    if batch:
        await flush()


async def measure(url: str, nodes: int, rows: int) -> tuple[float, float, float, int]:
    db = Database(url)
    await db.migrate()
    started = time.perf_counter()
    await load(db, nodes, rows)
    load_s = time.perf_counter() - started
    async with db.read() as conn:
        started = time.perf_counter()
        await conn.execute(
            select(contributions.c.owner, func.sum(contributions.c.compute_score)).group_by(
                contributions.c.owner
            )
        )
        peer_s = time.perf_counter() - started
    clock = FakeClock(START + EPOCH_SEC + 1)
    service = RewardService(db, clock, crypto.KeyPair.generate(), RewardConfig(EPOCH_SEC, 100_000_000_000, 1))
    started = time.perf_counter()
    result = await service.distribute(None)
    close_s = time.perf_counter() - started
    await db.dispose()
    return load_s, peer_s, close_s, len(result.payouts)


def pg_database() -> tuple[str, str]:
    name = f"gpupool_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--contributions", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                figures = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.nodes, args.contributions)
        else:
            name, url = pg_database()
            try:
                figures = await measure(url, args.nodes, args.contributions)
            finally:
                drop_pg(name)
        rows.append((backend, *figures))
        print(
            f"  {backend}: loaded in {figures[0]:.1f}s, aggregate {figures[1]:.2f}s, close {figures[2]:.2f}s",
            file=sys.stderr,
            flush=True,
        )
    print(f"\nepoch over {args.nodes} nodes, {args.contributions} contributions\n")
    print("| backend  | bare aggregate s | close epoch s | payouts | close/aggregate |")
    print("|----------|-----------------:|--------------:|--------:|----------------:|")
    for backend, _load, peer, close, paid in rows:
        print(f"| {backend:<8} | {peer:>16.2f} | {close:>13.2f} | {paid:>7} | {close / peer:>15.1f} |")
    for backend, _load, _peer, close, _paid in rows:
        if backend == "postgres":
            print(f"\npostgres close {close:.2f}s: {'meets' if close < 10 else 'MISSES'} the 10 s aim")


if __name__ == "__main__":
    asyncio.run(main())
