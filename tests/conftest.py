"""Shared fixtures: a database per test on SQLite and PostgreSQL, a fake clock, an in-process hub.

PostgreSQL is required: a run where 127.0.0.1:5432 cannot be reached fails, unless the person running
it sets GPUPOOL_TEST_SKIP_POSTGRES=1, which skips those tests with a loud warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis
import uvicorn
from asgi_lifespan import LifespanManager
from psycopg import sql

from gpupool.api.app import create_app
from gpupool.config import HubSettings
from gpupool.core.ports import FakeClock
from gpupool.hub.container import Hub
from gpupool.main import build_hub

PG_ADMIN_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_PASSWORD = "admin-password-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc)


_PG_ERROR = _pg_reachable()


REDIS_TEST_URL = os.environ.get("GPUPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_reachable() -> str | None:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3).ping()
        return None
    except redis.RedisError as exc:
        return str(exc)


_REDIS_ERROR = _redis_reachable()


def pytest_report_header() -> list[str]:
    return [
        f"postgresql: {'reachable at ' + PG_ADMIN_DSN if _PG_ERROR is None else 'UNREACHABLE: ' + _PG_ERROR}",
        "redis: "
        + (f"reachable at {REDIS_TEST_URL}" if _REDIS_ERROR is None else f"UNREACHABLE: {_REDIS_ERROR}"),
    ]


_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> bool:
    """Make this process the subreaper of everything the suite starts (Linux): a process orphaned by
    its parent's crash comes back to us instead of PID 1, so it can be counted and killed."""
    if sys.platform != "linux":
        return False
    return int(ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fails the run when a test left a process running (a task's ``sleep 600``, a node, a hub)."""
    watching = _adopt_orphans()
    yield
    if not watching:
        return
    time.sleep(0.5)  # a shell the last test started may still be handing its children over to us
    deadline = time.monotonic() + 10  # a process stopped by the last test may still be on its way out
    while (left := _live_children()) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = "; ".join(f"{p.pid} {_cmdline(p)}" for p in left)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap the orphans that ended on their own
            pass
    if left:
        pytest.fail(f"the suite left processes running (now killed): {described}", pytrace=False)


def _live_children() -> list[psutil.Process]:
    children = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE and not _interpreter_helper(proc):
                children.append(proc)
    return children


def _interpreter_helper(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker (started by the "spawn" context of the PoC engine) lives as
    long as this interpreter and ends when it does: it is Python's, not something a test left behind."""
    return "multiprocessing.resource_tracker" in _cmdline(proc)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except psutil.Error:
        return "?"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database (number 15), emptied before and after the test."""
    if _REDIS_ERROR is not None:
        if os.environ.get("GPUPOOL_TEST_SKIP_REDIS") == "1":
            pytest.skip(f"REDIS TESTS SKIPPED: {_REDIS_ERROR}")
        pytest.fail(f"Redis at {REDIS_TEST_URL} is unreachable: {_REDIS_ERROR}", pytrace=False)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


def _require_postgres() -> None:
    if _PG_ERROR is None:
        return
    if os.environ.get("GPUPOOL_TEST_SKIP_POSTGRES") == "1":
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: {_PG_ERROR}")
    pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} is unreachable: {_PG_ERROR}", pytrace=False)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; yields its SQLAlchemy URL."""
    _require_postgres()
    name = f"gpupool_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gpupool.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings_factory(db_url: str, tmp_path: Path) -> Callable[..., HubSettings]:
    def make(**overrides: object) -> HubSettings:
        values: dict[str, object] = {
            "db_url": db_url,
            "data_dir": tmp_path / "hub-data",
            "storage_path": tmp_path / "artifacts",
            "admin_password": ADMIN_PASSWORD,
            "jwt_secret": "test-jwt-secret-0123456789abcdef0123456789",
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "grpc_enabled": False,  # the gRPC tests turn it on, on a free port
        }
        values.update(overrides)
        return HubSettings.model_validate(values)

    return make


@dataclass
class HubClient:
    """An in-process hub and an HTTP client bound to it, plus helpers to make users."""

    hub: Hub
    http: httpx.AsyncClient

    async def login(self, username: str, password: str) -> dict[str, object]:
        resp = await self.http.post("/v1/auth/login", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        body: dict[str, object] = resp.json()
        return body

    async def admin_headers(self) -> dict[str, str]:
        tokens = await self.login("admin", ADMIN_PASSWORD)
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    async def make_user(self, username: str, *, role: str = "user", balance: int = 0) -> dict[str, str]:
        """Create a user (funded with ``balance`` micro-units) and return their auth headers."""
        admin = await self.admin_headers()
        password = f"pw-{username}-secret"
        resp = await self.http.post(
            "/v1/users", json={"username": username, "password": password, "role": role}, headers=admin
        )
        assert resp.status_code == 201, resp.text
        if balance:
            resp = await self.http.post(
                "/v1/admin/mint",
                json={"to": username, "amount": balance, "idempotency_key": f"fund-{username}"},
                headers=admin,
            )
            assert resp.status_code == 201, resp.text
        tokens = await self.login(username, password)
        return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
async def hub_client_factory(
    settings_factory: Callable[..., HubSettings], clock: FakeClock
) -> AsyncIterator[Callable[..., Awaitable[HubClient]]]:
    """Build in-process hubs (several may share one database); all are shut down after the test."""
    managers: list[LifespanManager] = []
    clients: list[httpx.AsyncClient] = []

    async def make(**overrides: object) -> HubClient:
        hub = build_hub(settings_factory(**overrides), clock)
        manager = LifespanManager(create_app(hub))
        await manager.__aenter__()
        managers.append(manager)
        transport = httpx.ASGITransport(app=manager.app, client=("10.0.0.1", 5000))
        http = httpx.AsyncClient(transport=transport, base_url="http://hub")
        clients.append(http)
        return HubClient(hub=hub, http=http)

    try:
        yield make
    finally:
        for http in clients:
            await http.aclose()
        for manager in reversed(managers):
            await manager.__aexit__(None, None, None)


@pytest.fixture
async def hub_client(hub_client_factory: Callable[..., Awaitable[HubClient]]) -> HubClient:
    return await hub_client_factory()


@dataclass
class LiveHub(HubClient):
    """A hub served by uvicorn on a real port inside the test's event loop (for WebSocket tests)."""

    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


@pytest.fixture
async def live_hub_factory(
    settings_factory: Callable[..., HubSettings], clock: FakeClock
) -> AsyncIterator[Callable[..., Awaitable[LiveHub]]]:
    hubs: list[LiveHub] = []

    async def make(**overrides: object) -> LiveHub:
        hub = build_hub(settings_factory(**overrides), clock)
        port = free_port()
        config = uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        live = LiveHub(hub=hub, http=httpx.AsyncClient(base_url=url), url=url, server=server, task=task)
        hubs.append(live)
        return live

    try:
        yield make
    finally:
        for live in hubs:
            await live.http.aclose()
            if not live.task.done():
                await live.stop()
