"""End-to-end throughput and latency of no-op tasks: gpupool against dramatiq + Redis and celery + Redis.

gpupool: a real hub process (SQLite) and 50 simulated nodes in this process speaking the node protocol
(signed registration, heartbeat socket, signed result); a task is counted when it is settled in the
ledger (submit, escrow hold, match, push, result, settlement). Peers: the same number of no-op jobs
through dramatiq's and celery's Redis brokers with a worker process each, counted when the result is
back. Latency is one task at a time, submit to settled (or result received).

    python bench/dispatch.py [--tasks 500] [--nodes 50]

dramatiq and celery are benchmark-only dependencies: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

sys.path.insert(0, str(Path(__file__).parent))
from heartbeats import free_port, wait_up
from simnodes import make_nodes, register_all

from gpupool import crypto
from gpupool.heartbeat_protocol import BATCH_SUBPROTOCOL, envelope, opened

ADMIN = "bench-admin-password"
REDIS = os.environ.get("GPUPOOL_BENCH_REDIS", "redis://127.0.0.1:6379/14")


async def node_loop(hub_url: str, token: str, key: crypto.KeyPair, stop: asyncio.Event) -> None:
    """Answer every assignment at once with a signed, successful result on the heartbeat socket, as
    the node agent does: it offers the batch subprotocol, and the results of the assignments that
    came in one frame are ready in one tick, so they leave in one envelope as the agent's outbox sends
    them (it falls back to ``POST /v1/tasks/{id}/result`` only when the socket is down)."""
    ws_url = hub_url.replace("http://", "ws://", 1)
    url = f"{ws_url}/v1/miners/heartbeat?session_token={token}"
    async with websockets.connect(  # as the agent connects
        url, compression=None, subprotocols=[Subprotocol(BATCH_SUBPROTOCOL)]
    ) as ws:
        beat = 0.0
        while not stop.is_set():
            if time.monotonic() - beat > 5:  # heartbeats as the agent sends them, or the hub drops us
                await ws.send(json.dumps({"ts": time.time(), "queue_len": 0}))
                beat = time.monotonic()
            try:
                messages = opened(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            except TimeoutError:
                continue
            results = []
            for message in messages:
                if message.get("type") == "result_ack" and message.get("status") != 200:
                    raise SystemExit(f"the hub refused a result: {message}")
                if message.get("type") != "assign":
                    continue
                body = {
                    "task_id": message["task"]["task_id"],
                    "exit_code": 0,
                    "status": "succeeded",
                    "usage": {"gpu_seconds": 0.01, "duration_sec": 0.01},
                    "artifacts": [],
                }
                signed = crypto.sign_body(key, crypto.KIND_TASK_RESULT, body, created_at=int(time.time()))
                results.append({"type": "result", "result": signed})
            if results:
                await ws.send(json.dumps(envelope(results)))


async def gpupool_run(n_tasks: int, n_nodes: int, batch: int) -> tuple[float, list[float]]:
    """Tasks per second and one-task latencies; ``batch`` > 1 submits through ``/v1/tasks/batch``."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "GPUPOOL_DB_URL": f"sqlite:///{tmp}/hub.db",
            "GPUPOOL_HUB_DATA_DIR": f"{tmp}/d",
            "GPUPOOL_ADMIN_PASSWORD": ADMIN,
            "GPUPOOL_HUB_LOG_LEVEL": "warning",
            "GPUPOOL_HUB_RATE_LIMIT": "100000/second",
            "GPUPOOL_HUB_ARGON2_TIME_COST": "1",
            "GPUPOOL_HUB_ARGON2_MEMORY_KIB": "64",
        }
        hub = subprocess.Popen(
            [sys.executable, "-m", "gpupool", "hub", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        stop = asyncio.Event()
        try:
            wait_up(f"{url}/v1/health", hub)
            nodes = make_nodes(n_nodes)
            for n in nodes:
                n.body["max_parallel"] = 8
                n.body["price_micro_per_ksec"] = 1000
            await register_all(url, nodes)
            loops = [asyncio.create_task(node_loop(url, n.session_token or "", n.key, stop)) for n in nodes]
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                tok = (
                    await http.post("/v1/auth/login", json={"username": "admin", "password": ADMIN})
                ).json()
                admin = {"Authorization": f"Bearer {tok['access_token']}"}
                await http.post(
                    "/v1/users", json={"username": "bench", "password": "bench-password"}, headers=admin
                )
                await http.post(
                    "/v1/admin/mint",
                    json={"to": "bench", "amount": 10**14, "idempotency_key": "b"},
                    headers=admin,
                )
                tok = (
                    await http.post(
                        "/v1/auth/login", json={"username": "bench", "password": "bench-password"}
                    )
                ).json()
                user = {"Authorization": f"Bearer {tok['access_token']}"}
                body = {"command": ["true"], "max_price_micro_per_ksec": 1_000_000, "timeout_sec": 10}

                async def one() -> str:
                    return str((await http.post("/v1/tasks", json=body, headers=user)).json()["task_id"])

                async def settled(task_id: str) -> None:
                    while (await http.get(f"/v1/tasks/{task_id}", headers=user)).json()[
                        "status"
                    ] != "succeeded":
                        await asyncio.sleep(0.01)

                latencies = []
                for _ in range(20):
                    started = time.perf_counter()
                    await settled(await one())
                    latencies.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                gate = asyncio.Semaphore(64)

                async def submit() -> str:
                    async with gate:
                        return await one()

                if batch > 1:
                    lanes = asyncio.Semaphore(4)  # a few requests in flight, as a client would

                    async def submit_batch(size: int) -> set[str]:
                        async with lanes:
                            resp = await http.post(
                                "/v1/tasks/batch", json={"tasks": [body] * size}, headers=user
                            )
                        return {t["task_id"] for t in resp.json()["tasks"]}

                    sizes = [min(batch, n_tasks - start) for start in range(0, n_tasks, batch)]
                    ids = set().union(*await asyncio.gather(*(submit_batch(n) for n in sizes)))
                else:
                    ids = set(await asyncio.gather(*(submit() for _ in range(n_tasks))))
                live = {"status": ["queued", "assigned", "running"], "limit": 1}
                # One poller for all, so polling does not load the hub more than the work; a task
                # leaves the live states in the transaction that settles it.
                while (await http.get("/v1/tasks", params=live, headers=user)).json():
                    await asyncio.sleep(0.1)
                rate = n_tasks / (time.perf_counter() - started)
                await _check_settled(http, user, ids)
            stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            return rate, latencies
        finally:
            hub.terminate()
            hub.wait(15)


async def _check_settled(http: httpx.AsyncClient, user: dict[str, str], ids: set[str]) -> None:
    """After the clock stops: every task submitted succeeded and was charged (not timed)."""
    seen: dict[str, dict[str, Any]] = {}
    before = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"before": before} if before is not None else {})
        page = (await http.get("/v1/tasks", params=params, headers=user)).json()
        seen |= {t["task_id"]: t for t in page}
        if len(page) < 500:
            break
        before = page[-1]["submitted_at"]
    bad = [i for i in ids if seen.get(i, {}).get("status") != "succeeded" or seen[i]["cost"] is None]
    if bad:
        raise SystemExit(
            f"{len(bad)} of {len(ids)} tasks did not succeed and settle, e.g. {seen.get(bad[0])}"
        )


PEERS = {
    "dramatiq": textwrap.dedent(
        """
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.results import Results
        from dramatiq.results.backends import RedisBackend
        broker = RedisBroker(url=URL)
        broker.add_middleware(Results(backend=RedisBackend(url=URL)))
        dramatiq.set_broker(broker)

        @dramatiq.actor(store_results=True)
        def noop():
            return 1
        """
    ),
    "celery": textwrap.dedent(
        """
        from celery import Celery
        app = Celery("bench", broker=URL, backend=URL)
        app.conf.worker_hijack_root_logger = False

        @app.task
        def noop():
            return 1
        """
    ),
}


def peer_run(name: str, n_tasks: int, workdir: Path) -> tuple[float, list[float]]:
    module = workdir / f"peer_{name}.py"
    module.write_text(f"URL = {REDIS!r}\n" + PEERS[name])
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    if name == "dramatiq":
        worker = [sys.executable, "-m", "dramatiq", f"peer_{name}", "--processes", "1", "--threads", "8"]
    else:
        worker = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"peer_{name}",
            "worker",
            "-c",
            "8",
            "-P",
            "threads",
            "--loglevel",
            "warning",
        ]
    proc = subprocess.Popen(
        worker, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sys.path.insert(0, str(workdir))
    try:
        mod: Any = __import__(f"peer_{name}")
        if name == "dramatiq":

            def send() -> Any:
                return mod.noop.send()

            def get(msg: Any) -> None:
                msg.get_result(block=True, timeout=60_000)
        else:

            def send() -> Any:
                return mod.noop.delay()

            def get(msg: Any) -> None:
                msg.get(timeout=60)

        get(send())  # warm: the worker is up
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            get(send())
            latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        messages = [send() for _ in range(n_tasks)]
        for msg in messages:
            get(msg)
        return n_tasks / (time.perf_counter() - started), latencies
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500, help="tasks per /v1/tasks/batch request")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of all four, interleaved; the table shows medians"
    )
    args = parser.parse_args()
    import redis

    names = ["gpupool", f"gpupool, batches of {args.batch}", *PEERS]
    rates: dict[str, list[float]] = {name: [] for name in names}
    latencies: dict[str, list[float]] = {name: [] for name in names}
    # Interleaved rounds: this machine's speed drifts by a third within minutes, so a ratio is only
    # fair between runs taken side by side, and the median of a few rounds resists one slow spell.
    for _ in range(args.repeat):
        redis.Redis.from_url(REDIS).flushdb()
        runs = [
            asyncio.run(gpupool_run(args.tasks, args.nodes, 1)),
            asyncio.run(gpupool_run(args.tasks, args.nodes, args.batch)),
        ]
        with tempfile.TemporaryDirectory() as tmp:
            runs += [peer_run(name, args.tasks, Path(tmp)) for name in PEERS]
        for name, (rate, lat) in zip(names, runs, strict=True):
            rates[name].append(rate)
            latencies[name] += lat
    rows = [(name, statistics.median(rates[name]), latencies[name]) for name in names]
    print(
        f"\n{args.tasks} no-op tasks, {args.nodes} simulated nodes (gpupool), 8 worker threads (peers), "
        f"median of {args.repeat} interleaved rounds\n"
    )
    print("| system                     | tasks/s | p50 ms | p99 ms | settles money |")
    print("|----------------------------|--------:|-------:|-------:|---------------|")
    for name, rate, lat in rows:
        q = statistics.quantiles(lat, n=100)
        money = "yes" if name.startswith("gpupool") else "no"
        print(f"| {name:<26} | {rate:>7.0f} | {q[49]:>6.1f} | {q[98]:>6.1f} | {money:<13} |")
    for ours, rate, _ in rows[:2]:
        for name, peer, _ in rows[2:]:
            print(f"ratio {ours} / {name}: {rate / peer:.2f}")
    print("rounds (tasks/s): " + "; ".join(f"{n} {', '.join(f'{r:.0f}' for r in rates[n])}" for n in names))


if __name__ == "__main__":
    main()
