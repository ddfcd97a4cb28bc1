"""Durable transfers per second through the ledger service, against the raw driver running the same SQL.

"ours" is ``LedgerService.transfer`` (idempotency claim, balance move, entries: three statements in one
transaction on ``gpupool.store.db.Database``). "raw" issues exactly the statements ours emits (checked
below against what SQLAlchemy sent) straight through the async driver: aiosqlite on one connection in
WAL with ``synchronous=FULL`` and BEGIN/COMMIT per transfer, or an asyncpg pool as large as ours with a
transaction per transfer. Each side gets its own fresh, migrated database with the same funded
accounts and replays the same random transfers, each with a unique idempotency key.

    python bench/ledger.py [--count 2000] [--backends sqlite,postgres] [--concurrency 1,16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite
import asyncpg
import psycopg
from psycopg import sql
from sqlalchemy import event

from gpupool.core.ledger import AccountType, hold_account, username_account
from gpupool.core.model import Principal, Role
from gpupool.core.ports import SystemClock
from gpupool.hub.ledger import LedgerService
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo

PG_ADMIN_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MAX_AMOUNT_MICRO = 10**15
FUNDING_MICRO = 10**12
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

# The statements SQLAlchemy emits for LedgerRepo.claim / apply, per dialect (verified at run time).
SQLITE_SQL = (
    "INSERT INTO postings (kind, scope, idempotency_key, request_hash, source, destination, amount_micro, "
    "actor, memo, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, idempotency_key) DO NOTHING RETURNING id",
    "UPDATE accounts SET balance_micro=(accounts.balance_micro + CASE WHEN (accounts.id = ?) THEN ? "
    "WHEN (accounts.id = ?) THEN ? ELSE ? END) WHERE accounts.id IN (?, ?)",
    "INSERT INTO entries (posting_id, account, amount_micro) VALUES (?, ?, ?)",
)
PG_SQL = (
    "INSERT INTO postings (kind, scope, idempotency_key, request_hash, source, destination, amount_micro, "
    "actor, memo, created_at) VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, "
    "$6::VARCHAR, $7::BIGINT, $8::VARCHAR, $9::VARCHAR, $10::FLOAT) "
    "ON CONFLICT (scope, idempotency_key) DO NOTHING RETURNING postings.id",
    "UPDATE accounts SET balance_micro=(accounts.balance_micro + CASE WHEN (accounts.id = $1::VARCHAR) "
    "THEN $2::BIGINT WHEN (accounts.id = $3::VARCHAR) THEN $4::BIGINT ELSE $5::BIGINT END) "
    "WHERE accounts.id IN ($6::VARCHAR, $7::VARCHAR)",
    "INSERT INTO entries (posting_id, account, amount_micro) VALUES ($1::BIGINT, $2::VARCHAR, $3::BIGINT)",
)


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str  # username
    destination: str  # username
    amount_micro: int
    key: str


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    concurrency: int
    ours_tps: float
    raw_tps: float

    @property
    def ratio(self) -> float:
        return self.ours_tps / self.raw_tps


Run = Callable[[Transfer], Awaitable[None]]


def make_transfers(users: Sequence[str], count: int, tag: str, rng: random.Random) -> list[Transfer]:
    out = []
    for i in range(count):
        source, destination = rng.sample(users, 2)
        out.append(Transfer(source, destination, rng.randint(1, 1000), f"bench-{tag}-{i}"))
    return out


def posting_params(t: Transfer) -> tuple[str, str, list[Any], list[Any]]:
    """What ours computes per transfer (same request hash recipe), as statement parameters."""
    src, dst = username_account(t.source), username_account(t.destination)
    legs = "|".join(f"{a}:{d}" for a, d in sorted([(src, -t.amount_micro), (dst, t.amount_micro)]))
    request_hash = hashlib.sha256(f"transfer|{legs}|".encode()).hexdigest()
    claim = ["transfer", src, t.key, request_hash, src, dst, t.amount_micro, t.source, None, time.time()]
    update = [src, -t.amount_micro, dst, t.amount_micro, 0, src, dst]
    return src, dst, claim, update


async def drive(run: Run, transfers: Sequence[Transfer], concurrency: int) -> float:
    """Push every transfer through ``run`` with ``concurrency`` workers; return transfers per second."""
    pending = iter(transfers)

    async def worker() -> None:
        for t in pending:
            await run(t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(transfers) / (time.perf_counter() - started)


# --- setup: the same accounts and funds in each fresh database, through the service layer ------------


async def seed(db: Database, users: Sequence[str]) -> None:
    await db.migrate()
    now = time.time()

    async def work(conn: Any) -> None:
        repo = LedgerRepo(conn)
        for name in users:
            account = username_account(name)
            await repo.ensure_account(account, AccountType.USER.value, now)
            await repo.ensure_account(hold_account(account), AccountType.HOLD.value, now)

    await db.run(work)
    service = LedgerService(db, SystemClock(), MAX_AMOUNT_MICRO)
    admin = Principal(user_id=1, username="admin", role=Role.ADMIN)
    for name in users:
        await service.mint(admin, name, FUNDING_MICRO, f"fund-{name}")


@contextmanager
def pg_database() -> Iterator[str]:
    name = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the two sides ----------------------------------------------------------------------------------


@asynccontextmanager
async def ours(url: str, users: Sequence[str], captured: list[str]) -> AsyncIterator[Run]:
    db = Database(url)
    await seed(db, users)
    service = LedgerService(db, SystemClock(), MAX_AMOUNT_MICRO)
    principals = {
        name: Principal(user_id=i + 2, username=name, role=Role.USER) for i, name in enumerate(users)
    }

    def capture(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if len(captured) < 3 and _norm(statement) not in ("BEGIN", "COMMIT"):
            captured.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)

    async def run(t: Transfer) -> None:
        await service.transfer(principals[t.source], t.destination, t.amount_micro, t.key)

    try:
        yield run
    finally:
        await db.dispose()


@asynccontextmanager
async def raw_sqlite(path: str, users: Sequence[str]) -> AsyncIterator[Run]:
    db = Database(f"sqlite:///{path}")
    await seed(db, users)
    await db.dispose()
    claim_sql, update_sql, entries_sql = SQLITE_SQL
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000"):
        await conn.execute(f"PRAGMA {pragma}")
    lock = asyncio.Lock()  # one connection: transactions take turns

    async def run(t: Transfer) -> None:
        src, dst, claim, update = posting_params(t)
        async with lock:
            await conn.execute("BEGIN")
            try:
                (posting_id,) = (await conn.execute_fetchall(claim_sql, claim))[0]
                async with conn.execute(update_sql, update) as cur:
                    assert cur.rowcount == 2
                await conn.executemany(
                    entries_sql, [(posting_id, src, -t.amount_micro), (posting_id, dst, t.amount_micro)]
                )
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    try:
        yield run
    finally:
        await conn.close()


@asynccontextmanager
async def raw_postgres(url: str, users: Sequence[str], pool_size: int) -> AsyncIterator[Run]:
    db = Database(url, pool_size=pool_size)
    await seed(db, users)
    await db.dispose()
    claim_sql, update_sql, entries_sql = PG_SQL
    # Ours is a QueuePool of pool_size plus as many overflow connections.
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=2 * pool_size)
    assert pool is not None

    async def once(t: Transfer) -> None:
        src, dst, claim, update = posting_params(t)
        async with pool.acquire() as conn, conn.transaction():
            posting_id = await conn.fetchval(claim_sql, *claim)
            status = await conn.execute(update_sql, *update)
            assert status == "UPDATE 2"
            await conn.executemany(
                entries_sql, [(posting_id, src, -t.amount_micro), (posting_id, dst, t.amount_micro)]
            )

    async def run(t: Transfer) -> None:  # the retry Database.run gives ours
        for attempt in range(5):
            try:
                return await once(t)
            except RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.005 * 2**attempt)

    try:
        yield run
    finally:
        await pool.close()


# --- measurement ------------------------------------------------------------------------------------


def _norm(statement: str) -> str:
    return re.sub(r"\s+", " ", statement).strip()


def check_same_sql(captured: Sequence[str], expected: Sequence[str]) -> None:
    got = [_norm(s) for s in captured]
    if got != [_norm(s) for s in expected]:
        raise SystemExit("ours emitted different SQL than the raw peer runs:\n" + "\n".join(got))


async def measure(
    name: str, ours_run: Run, raw_run: Run, users: Sequence[str], args: argparse.Namespace
) -> list[Row]:
    rng = random.Random(7)
    rows = []
    warmup = make_transfers(users, max(50, args.count // 10), f"warm-{name}", rng)
    for concurrency in args.concurrency:
        batches = [make_transfers(users, args.count, f"{concurrency}-{r}", rng) for r in range(args.rounds)]
        best_ours = best_raw = 0.0
        await drive(ours_run, warmup, concurrency)  # same keys on both sides: each database sees them once
        await drive(raw_run, warmup, concurrency)
        warmup = make_transfers(users, len(warmup), f"warm-{name}-{concurrency}", rng)
        for batch in batches:  # alternate, keep the best of each, so drift hits both sides alike
            best_ours = max(best_ours, await drive(ours_run, batch, concurrency))
            best_raw = max(best_raw, await drive(raw_run, batch, concurrency))
        rows.append(Row(name, concurrency, best_ours, best_raw))
        print(
            f"  {name:<9} c={concurrency:<3} ours {best_ours:8.0f} tx/s   raw {best_raw:8.0f} tx/s",
            flush=True,
        )
    return rows


async def bench_sqlite(args: argparse.Namespace, users: Sequence[str]) -> list[Row]:
    captured: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpupool-bench-") as tmp:
        async with (
            ours(f"sqlite:///{tmp}/ours.db", users, captured) as ours_run,
            raw_sqlite(f"{tmp}/raw.db", users) as raw_run,
        ):
            rows = await measure("sqlite", ours_run, raw_run, users, args)
    check_same_sql(captured, SQLITE_SQL)
    return rows


async def bench_postgres(args: argparse.Namespace, users: Sequence[str]) -> list[Row]:
    captured: list[str] = []
    with pg_database() as ours_url, pg_database() as raw_url:
        async with (
            ours(ours_url, users, captured) as ours_run,
            raw_postgres(raw_url, users, pool_size=10) as raw_run,
        ):
            rows = await measure("postgres", ours_run, raw_run, users, args)
    check_same_sql(captured, PG_SQL)
    return rows


def versions(backends: Sequence[str]) -> str:
    parts = [f"python {sys.version.split()[0]}", f"sqlite {sqlite3.sqlite_version}"]
    if "postgres" in backends:
        with psycopg.connect(PG_ADMIN_DSN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        parts.append(f"postgresql {row[0].split()[0] if row else '?'}")
    parts += [f"aiosqlite {aiosqlite.__version__}", f"asyncpg {asyncpg.__version__}"]
    return ", ".join(parts)


def print_table(rows: Sequence[Row]) -> None:
    print()
    print("| backend  | concurrency | ours tx/s | raw tx/s | ours/raw |")
    print("|----------|------------:|----------:|---------:|---------:|")
    for r in rows:
        print(
            f"| {r.backend:<8} | {r.concurrency:>11} | {r.ours_tps:>9.0f} "
            f"| {r.raw_tps:>8.0f} | {r.ratio:>8.2f} |"
        )
    worst = min(rows, key=lambda r: r.ratio)
    verdict = "meets" if worst.ratio >= 0.5 else "MISSES"
    print(
        f"\nworst ratio ours/raw: {worst.ratio:.2f} ({worst.backend}, c={worst.concurrency}); "
        f"{verdict} >= 0.50"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="transfers per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per side; the best is kept")
    parser.add_argument("--accounts", type=int, default=100, help="funded user accounts")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite, postgres")
    parser.add_argument(
        "--concurrency", default="1,16", type=lambda s: [int(x) for x in s.split(",")], help="comma list"
    )
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(args.backends) - {"sqlite", "postgres"}:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return args


async def main_async(args: argparse.Namespace) -> list[Row]:
    users = [f"bench{i:03d}" for i in range(args.accounts)]
    rows: list[Row] = []
    if "sqlite" in args.backends:
        rows += await bench_sqlite(args, users)
    if "postgres" in args.backends:
        rows += await bench_postgres(args, users)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"ledger: durable transfers/s, {args.count} per measurement, {args.accounts} accounts")
    print(f"        {versions(args.backends)}, {os.cpu_count()} cores")
    rows = asyncio.run(main_async(args))
    print_table(rows)


if __name__ == "__main__":
    main()
