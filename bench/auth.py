"""What checking a user's generation on every request costs: cached, uncached, and no check at all.

"cached" is ``AuthService.authenticate`` as the hub runs it (JWT decode + the in-process user state,
``GPUPOOL_HUB_USER_CACHE_SEC=5``); "db each call" is the same with the cache off (a read per request);
"jwt only" is the signature and expiry check alone, what a request cost before tokens could be revoked.
Each backend gets a fresh, migrated database with one user; the same token is checked ``--count`` times.

    python bench/auth.py [--count 5000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from gpupool.core.ports import SystemClock
from gpupool.hub.auth import AuthConfig, AuthService
from gpupool.hub.passwords import Passwords
from gpupool.hub.throttle import Budget, make_storage
from gpupool.hub.user_state import UserStateCache
from gpupool.store.db import Database

PG_ADMIN_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"


def _service(db: Database, cache_s: float) -> AuthService:
    storage = make_storage(None)
    return AuthService(
        db,
        SystemClock(),
        Passwords(1, 64),
        AuthConfig(jwt_secret=SECRET, access_ttl_s=3600, refresh_ttl_s=86400),
        failures_by_user=Budget(storage, "u", "5/minute"),
        failures_by_client=Budget(storage, "c", "5/minute"),
        users=UserStateCache(db, SystemClock(), cache_s),
    )


async def _rate(count: int, call: Callable[[], Awaitable[Any]] | Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        result = call()
        if asyncio.iscoroutine(result):
            await result
    return count / (time.perf_counter() - started)


async def measure(url: str, count: int) -> tuple[float, float, float]:
    db = Database(url)
    await db.migrate()
    try:
        cached, uncached = _service(db, 5.0), _service(db, 0.0)
        await cached.create_user(None, "bench", "bench-password", "user")
        token = (await cached.login("bench", "bench-password", "bench")).access_token
        jwt_only = await _rate(count, lambda: cached._decode(token))
        with_cache = await _rate(count, lambda: cached.authenticate(token))
        each_call = await _rate(count, lambda: uncached.authenticate(token))
        return jwt_only, with_cache, each_call
    finally:
        await db.dispose()


async def main(count: int, backends: list[str]) -> None:
    print(f"{'backend':<9} | {'jwt only/s':>10} | {'cached/s':>9} | {'db each call/s':>14} | cached/jwt")
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                figures = await measure(f"sqlite:///{tmp}/bench.db", count)
        else:
            name = f"gpupool_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                base = PG_ADMIN_DSN.rsplit("/", 1)[0]
                figures = await measure(f"{base}/{name}", count)
            finally:
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                    )
        jwt_only, cached, each = figures
        print(
            f"{backend:<9} | {jwt_only:>10.0f} | {cached:>9.0f} | {each:>14.0f} | {cached / jwt_only:>10.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.backends.split(",")))
