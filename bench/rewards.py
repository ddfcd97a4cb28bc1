"""Closing one reward epoch over 100,000 nodes and 1,000,000 contributions, on SQLite and PostgreSQL.

Each backend gets a fresh, migrated database with 100k miners' contributions (10 per node on average,
random sizes) bulk-loaded into the epoch with the plain drivers; then ``RewardService.distribute`` is
timed: the aggregate by owner, the integer split, one balanced posting whose credit entries are the
payouts, one hub signature over the Merkle root of the payouts, the carried dues — all in one
transaction. Aim: under 10 s on PostgreSQL; the table gives the ratio to that limit. The peer in the
same run is the bare aggregate query the distribution starts from (the least any implementation has
to do). "all receipts" is what the admin endpoint adds after the close: every payout's receipt (the
signed root plus its inclusion proof) for the response. The books are checked afterwards: the trial
balance balances and payouts + carried dues equal the emission to the micro-unit.

    python bench/rewards.py [--nodes 100000] [--contributions 1000000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import func, select

from gpupool import crypto, receipts
from gpupool.core.ports import FakeClock
from gpupool.hub.rewards import RewardConfig, RewardService
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.rewards_repo import RewardsRepo
from gpupool.store.tables import contributions

PG_ADMIN_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
EPOCH_SEC = 300
START = 1_800_000_000.0
LIMIT_S = 10.0
EMISSION = 100_000_000_000


def address(i: int) -> str:
    return crypto.to_checksum_address("0x" + f"{i:040x}")


def contribution_rows(nodes: int, rows: int) -> list[tuple[object, ...]]:
    """The epoch's contributions: every node once, then random nodes, random sizes (seeded)."""
    rng = random.Random(5)
    owners = [address(i + 1) for i in range(nodes)]
    epoch = int(START // EPOCH_SEC)
    out = []
    for i in range(rows):
        n = i % nodes if i < nodes else rng.randrange(nodes)
        score = rng.randint(1_000, 3_600_000)
        out.append(
            (f"n{n:06d}", owners[n], "task", f"t{i}", epoch, START, START + 60, 60.0, 0, score, "bench")
        )
    return out


COLUMNS = (
    "node_id, owner, source, ref, epoch, start_timestamp, end_timestamp, duration_seconds, "
    "samples_processed, compute_score, recorded_by"
)


def load(url: str, data: list[tuple[object, ...]]) -> None:
    """Bulk-load with the plain drivers (COPY on PostgreSQL): setting up is not what is measured."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(f"INSERT INTO contributions ({COLUMNS}) VALUES ({', '.join('?' * 11)})", data)
        return
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY contributions ({COLUMNS}) FROM STDIN") as copy:
            for row in data:
                copy.write_row(row)
        cur.execute("ANALYZE contributions")


async def measure(url: str, data: list[tuple[object, ...]]) -> dict[str, Any]:
    db = Database(url)
    await db.migrate()
    started = time.perf_counter()
    load(url, data)
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
    hub_key = crypto.KeyPair.generate()
    service = RewardService(db, clock, hub_key, RewardConfig(EPOCH_SEC, EMISSION, 1))
    started = time.perf_counter()
    result = await service.distribute(None)
    close_s = time.perf_counter() - started
    # What the admin endpoint adds on top: every payout's receipt (signed root + proof) for the response.
    started = time.perf_counter()
    every = [result.receipt(i) for i in range(len(result.payouts))]
    receipts_s = time.perf_counter() - started
    for i in (0, len(every) // 2, len(every) - 1):
        receipts.verify_payout_receipt(every[i], hub_key.pubkey)
    async with db.read() as conn:
        trial, total = await LedgerRepo(conn).trial_balance()
        carried = sum((await RewardsRepo(conn).carried()).values())
    paid = sum(p.amount_micro for p in result.payouts)
    assert total == 0 and all(cached == summed for _, _, cached, summed in trial), "books do not balance"
    assert paid + carried == EMISSION, "a micro-unit was created or lost"
    await db.dispose()
    return {
        "load": load_s,
        "peer": peer_s,
        "close": close_s,
        "payouts": len(result.payouts),
        "receipts": receipts_s,
        "paid": paid,
        **{f"t_{k}": v for k, v in result.timings.items()},
    }


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
    data = contribution_rows(args.nodes, args.contributions)
    results = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                figures = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", data)
        else:
            name, url = pg_database()
            try:
                figures = await measure(url, data)
            finally:
                drop_pg(name)
        results.append((backend, figures))
        print(f"  {backend}: loaded in {figures['load']:.1f}s, {figures}", file=sys.stderr, flush=True)
    print(f"\nepoch over {args.nodes} nodes, {args.contributions} contributions\n")
    print("| backend  | bare aggregate s | close epoch s | close / 10 s limit | payouts | all receipts s |")
    print("|----------|-----------------:|--------------:|-------------------:|--------:|---------------:|")
    for backend, f in results:
        print(
            f"| {backend:<8} | {f['peer']:>16.2f} | {f['close']:>13.2f} | {f['close'] / LIMIT_S:>18.2f} "
            f"| {f['payouts']:>7} | {f['receipts']:>14.2f} |"
        )
    steps = ("aggregate", "split", "posting", "seal", "carry")
    print("\nclose by step, seconds\n")
    print("| backend  | " + " | ".join(f"{s:>11}" for s in steps) + " |")
    print("|----------|" + "|".join("-" * 12 + ":" for _ in steps) + "|")
    for backend, f in results:
        print(f"| {backend:<8} | " + " | ".join(f"{f.get('t_' + s, 0.0):>11.2f}" for s in steps) + " |")
    for backend, f in results:
        if backend == "postgres":
            verdict = "meets" if f["close"] < LIMIT_S else "MISSES"
            print(f"\npostgres close {f['close']:.2f}s: {verdict} the {LIMIT_S:.0f} s aim")


if __name__ == "__main__":
    asyncio.run(main())
