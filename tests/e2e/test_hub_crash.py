"""kill -9 the hub in the middle of a stream of transfers: every acknowledged transfer survives."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.procs import HubProcess

pytestmark = pytest.mark.slow

MINTED = 10_000_000


async def _setup_users(base: str) -> dict[str, dict[str, str]]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        login = await http.post("/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        headers = {}
        for name in ("alice", "bob"):
            pw = f"pw-{name}-secret"
            resp = await http.post(
                "/v1/users", json={"username": name, "password": pw, "role": "user"}, headers=admin
            )
            assert resp.status_code == 201, resp.text
            mint = {"to": name, "amount": MINTED, "idempotency_key": f"fund-{name}"}
            assert (await http.post("/v1/admin/mint", json=mint, headers=admin)).status_code == 201
            tokens = (await http.post("/v1/auth/login", json={"username": name, "password": pw})).json()
            headers[name] = {"Authorization": f"Bearer {tokens['access_token']}"}
        headers["admin"] = admin
        return headers


async def _stream(
    base: str, headers: dict[str, dict[str, str]], acked: dict[str, int], sent: list[dict]
) -> None:
    """Send transfers from four workers until the hub dies; remember every 2xx answer."""

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            for i in range(100_000):
                sender, to = ("alice", "bob") if (i + w) % 2 else ("bob", "alice")
                body = {"to": to, "amount": 1 + (i % 7), "idempotency_key": f"w{w}-{i}"}
                sent.append({"sender": sender, **body})
                try:
                    resp = await http.post("/v1/transfers", json=body, headers=headers[sender])
                except httpx.TransportError:
                    return
                if resp.status_code in (200, 201):
                    acked[f"{sender}/{body['idempotency_key']}"] = resp.json()["id"]

    await asyncio.gather(*(worker(w) for w in range(4)))


async def test_kill_9_mid_stream_loses_no_acknowledged_transfer(db_url: str, tmp_path: Path) -> None:
    hub = HubProcess(db_url, tmp_path)
    hub.start()
    try:
        headers = await _setup_users(hub.url)
        acked: dict[str, int] = {}
        sent: list[dict] = []
        stream = asyncio.create_task(_stream(hub.url, headers, acked, sent))
        while len(acked) < 150:
            await asyncio.sleep(0.02)
        hub.kill()
        await asyncio.wait_for(stream, 30)
        assert len(acked) >= 150

        hub.start()
        async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
            # Re-sending every acknowledged request must find the same posting, not make a new one.
            for entry in sent:
                key = f"{entry['sender']}/{entry['idempotency_key']}"
                if key not in acked:
                    continue
                body = {k: entry[k] for k in ("to", "amount", "idempotency_key")}
                resp = await http.post("/v1/transfers", json=body, headers=headers[entry["sender"]])
                assert resp.status_code == 200, resp.text
                assert resp.json()["replayed"] is True and resp.json()["id"] == acked[key]
            tb = (await http.get("/v1/admin/ledger/trial-balance", headers=headers["admin"])).json()
            assert tb["balanced"] is True
            users = {a["account"]: a["balance"] for a in tb["accounts"] if a["type"] == "user"}
            assert users["user:alice"] + users["user:bob"] == 2 * MINTED
            assert all(v >= 0 for v in users.values())
    finally:
        if hub.proc and hub.proc.poll() is None:
            hub.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_hub_stops_cleanly_on_signal(db_url: str, tmp_path: Path, sig: int) -> None:
    hub = HubProcess(db_url, tmp_path)
    hub.start()
    assert hub.stop(sig) == 0
