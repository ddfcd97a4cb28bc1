"""Node (re)registrations per second: the restart storm, batched against one transaction per request.

Two measurements in one run:

1. The registration path in process (``RegistryService.register_miner``, the signature already made by
   the node), on SQLite and PostgreSQL: every node registered once (untimed), then all of them register
   again with fresh signatures, at once, as after a hub restart: first with the batcher held to one
   registration per transaction (the per-request path), then batched (up to 500 per transaction).
2. The storm over HTTP: one ``gpupool hub`` process on PostgreSQL, N nodes registered, the hub
   stopped and started again, and the time until all N have registered again (the client runs on the
   same machine and costs CPU too).

    python bench/registration.py [--nodes 3000] [--storm-nodes 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from asgi_lifespan import LifespanManager
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from heartbeats import free_port, wait_up
from simnodes import SimNode, make_nodes

from gpupool import crypto
from gpupool.api.app import create_app
from gpupool.api.routes.miners import _spec
from gpupool.api.schemas_registry import RegisterIn
from gpupool.config import HubSettings
from gpupool.hub.live import NodeSpec
from gpupool.main import build_hub

# The ceiling of the stack: the same route's body model parsed by FastAPI under uvicorn, nothing stored.
BARE_SERVER = """
import sys, uvicorn
from fastapi import FastAPI
from gpupool.api.schemas_registry import RegisterIn
app = FastAPI()

@app.post("/v1/miners/register")
async def register(body: RegisterIn) -> dict[str, object]:
    return {"miner_id": body.miner_id, "status": "online", "session_token": "gps_x", "lease_ttl_sec": 60}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

PG_ADMIN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


_last_round = [0]


def signed(nodes: list[SimNode]) -> list[dict[str, Any]]:
    """Fresh events: no two rounds share a second, so no two share an event id (a replay)."""
    now = _last_round[0] = max(int(time.time()), _last_round[0] + 1)
    return [crypto.sign_body(n.key, crypto.KIND_REGISTRATION, n.body, created_at=now) for n in nodes]


async def storm(register: Any, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Seconds until every body has registered, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await register(body)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - started


async def in_process(db_url: str, nodes: list[SimNode], concurrency: int) -> list[tuple[str, float, str]]:
    """(path, nodes/s, batches) for the per-request and the batched path on one database."""
    tmp = Path(tempfile.mkdtemp())
    settings = HubSettings.model_validate(
        {
            "db_url": db_url,
            "data_dir": tmp / "data",
            "storage_path": tmp / "artifacts",
            "admin_password": "bench-admin-password",
            "grpc_enabled": False,
        }
    )
    hub = build_hub(settings)
    before = signed(nodes)
    specs: dict[str, NodeSpec] = {b["pubkey"]: _spec(RegisterIn.model_validate(b)) for b in before}

    async def register(body: dict[str, Any]) -> None:
        await hub.registry.register_miner(body, specs[body["pubkey"]], None)

    rows = []
    async with LifespanManager(create_app(hub)):
        batcher = getattr(getattr(hub.registry, "enrolments", None), "batcher", None)
        await storm(register, before, concurrency)  # the pool as it stood before the restart
        for path, max_batch in (("per request", 1), ("batched", 500)):
            if batcher is None and max_batch == 1:
                continue  # code without the batcher (main before #20): only its own path
            if batcher is not None:
                batcher.max_batch = max_batch
                batcher.batches = batcher.items = 0
            seconds = await storm(register, signed(nodes), concurrency)
            per_batch = f"{batcher.items / max(batcher.batches, 1):.0f}" if batcher else "-"
            rows.append((path if batcher else "unbatched (old code)", len(nodes) / seconds, per_batch))
    return rows


def pg_database() -> tuple[str, str]:
    name = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start_hub(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = open(Path(env["GPUPOOL_HUB_DATA_DIR"]).parent / "hub.log", "ab")  # noqa: SIM115 - the hub's
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupool", "hub", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    wait_up(f"http://127.0.0.1:{port}/v1/health", proc)
    return proc


async def over_http(nodes: list[SimNode], concurrency: int) -> tuple[float, float]:
    """Seconds for the first registration of every node and for all of them after a hub restart."""
    name, url = pg_database()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "GPUPOOL_DB_URL": url,
            "GPUPOOL_HUB_DATA_DIR": f"{tmp}/data",
            "GPUPOOL_ADMIN_PASSWORD": "bench-admin-password",
            "GPUPOOL_HUB_LOG_LEVEL": "warning",
            "GPUPOOL_HUB_RATE_LIMIT": "1000000/second",
            "GPUPOOL_HUB_GRPC_ENABLED": "false",
        }
        timings = []
        try:
            for _ in range(2):  # first start, then the restart
                hub = start_hub(env, port)
                try:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

                        async def register(body: dict[str, Any]) -> None:
                            resp = await http.post("/v1/miners/register", json=body)
                            assert resp.status_code == 200, resp.text

                        timings.append(await storm(register, signed(nodes), concurrency))
                finally:
                    hub.terminate()
                    hub.wait(30)
        finally:
            drop_database(name)
    return timings[0], timings[1]


async def bare_http(nodes: list[SimNode], concurrency: int) -> float:
    """Seconds for the same requests against ``BARE_SERVER``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        wait_up(f"http://127.0.0.1:{port}/docs", proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            async def register(body: dict[str, Any]) -> None:
                resp = await http.post("/v1/miners/register", json=body)
                assert resp.status_code == 200, resp.text

            return await storm(register, signed(nodes), concurrency)
    finally:
        proc.terminate()
        proc.wait(30)


async def run(nodes_n: int, storm_n: int, concurrency: int) -> None:
    nodes = make_nodes(max(nodes_n, storm_n))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in (("sqlite", f"sqlite:///{tmp}/bench.db"), ("postgres", None)):
            name = None
            if url is None:
                name, url = pg_database()
            try:
                # in process nothing else limits how many wait: a storm is everyone at once
                for path, rate, per_batch in await in_process(url, nodes[:nodes_n], 512):
                    rows.append((backend, path, rate, per_batch))
            finally:
                if name:
                    drop_database(name)
    print(f"\nre-registration of {nodes_n} nodes in process, 512 at a time\n")
    print("| backend  | path                 | nodes/s | nodes per transaction |")
    print("|----------|----------------------|--------:|----------------------:|")
    for backend, path, rate, per_batch in rows:
        print(f"| {backend:<8} | {path:<20} | {rate:>7.0f} | {per_batch:>21} |")
    if storm_n:
        first, again = await over_http(nodes[:storm_n], concurrency)
        bare = await bare_http(nodes[:storm_n], concurrency)
        print(f"\n{storm_n} nodes over HTTP, one `gpupool hub` on PostgreSQL, {concurrency} at a time\n")
        print("| round                                 | seconds | nodes/s |")
        print("|---------------------------------------|--------:|--------:|")
        print(f"| first registration                    | {first:>7.1f} | {storm_n / first:>7.0f} |")
        print(f"| again after a hub restart             | {again:>7.1f} | {storm_n / again:>7.0f} |")
        print(f"| bare FastAPI parsing the body, peer   | {bare:>7.1f} | {storm_n / bare:>7.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--storm-nodes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(run(args.nodes, args.storm_nodes, args.concurrency))


if __name__ == "__main__":
    main()
