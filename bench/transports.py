"""The hub's two transports for the same calls: gRPC (SPEC §6) against HTTP, on one hub process.

A real ``gpupool hub`` (SQLite, its own process) serves both. From this process, rounds alternate
between the transports: a balance read (``GetBalance`` / ``GET /v1/balance``) and a keyed transfer
(``Transfer`` / ``POST /v1/transfers``), each ``--calls`` times with ``--concurrency`` in flight, over
one client each (a gRPC channel; an httpx client with keep-alive). The ratio is gRPC over HTTP.

    python bench/transports.py [--calls 2000] [--concurrency 1,32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import ADMIN_PASSWORD
from tests.procs import running_hub

from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc

Call = Callable[[int], Awaitable[object]]


async def timed(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """(calls per second, median latency in ms) of ``calls`` calls, ``concurrency`` at a time."""
    latencies: list[float] = []
    next_index = iter(range(calls))

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return calls / elapsed, statistics.median(latencies) * 1000


async def setup(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        admin_token = (
            await http.post("/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {admin_token}"}
        for name in ("alice", "bob"):
            body = {"username": name, "password": f"pw-{name}-secret", "role": "user"}
            await http.post("/v1/users", json=body, headers=admin)
        mint = {"to": "alice", "amount": 10**12, "idempotency_key": "fund"}
        await http.post("/v1/admin/mint", json=mint, headers=admin)
        login = await http.post("/v1/auth/login", json={"username": "alice", "password": "pw-alice-secret"})
        return str(login.json()["access_token"])


async def run(url: str, grpc_port: int, calls: int, levels: list[int], rounds: int) -> None:
    token = await setup(url)
    bearer = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        users = pb_grpc.UserServiceStub(channel)
        run_id = uuid.uuid4().hex[:8]

        async def http_balance(_: int) -> object:
            resp = await http.get("/v1/balance", headers=bearer)
            assert resp.status_code == 200, resp.text
            return resp

        async def grpc_balance(_: int) -> object:
            return await users.GetBalance(pb.GetBalanceRequest(token=token))

        async def http_transfer(i: int) -> object:
            body = {"to": "bob", "amount": 1, "idempotency_key": f"h-{run_id}-{i}-{time.perf_counter_ns()}"}
            resp = await http.post("/v1/transfers", json=body, headers=bearer)
            assert resp.status_code == 201, resp.text
            return resp

        async def grpc_transfer(i: int) -> object:
            key = f"g-{run_id}-{i}-{time.perf_counter_ns()}"
            request = pb.TransferRequest(
                token=token, receiver_username="bob", amount_micro=1, idempotency_key=key
            )
            return await users.Transfer(request)

        ops = {"balance read": (grpc_balance, http_balance), "transfer": (grpc_transfer, http_transfer)}
        await timed(grpc_balance, 200, 8)  # warm both paths before measuring
        await timed(http_balance, 200, 8)
        print(f"{calls} calls per round, {rounds} interleaved rounds, medians of the rounds\n")
        header = "| in flight | gRPC calls/s | HTTP calls/s | gRPC / HTTP | p50 gRPC ms | p50 HTTP ms |"
        print(f"| {'call':<12} {header}")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for op, (on_grpc, on_http) in ops.items():
            for level in levels:
                g_rates, h_rates, g_p50, h_p50 = [], [], [], []
                for _ in range(rounds):
                    rate, p50 = await timed(on_grpc, calls, level)
                    g_rates.append(rate)
                    g_p50.append(p50)
                    rate, p50 = await timed(on_http, calls, level)
                    h_rates.append(rate)
                    h_p50.append(p50)
                g, h = statistics.median(g_rates), statistics.median(h_rates)
                print(
                    f"| {op:<12} | {level:>9} | {g:>12,.0f} | {h:>12,.0f} | {g / h:>11.2f} "
                    f"| {statistics.median(g_p50):>11.2f} | {statistics.median(h_p50):>11.2f} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp, running_hub(Path(tmp)) as hub:
        asyncio.run(run(hub.url, hub.grpc_port, args.calls, levels, args.rounds))


if __name__ == "__main__":
    main()
