"""The node's PoW API on its 8080 app: status in both modes, validation, refusal in delegation mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gpupool import crypto
from gpupool.core.poc import PARAMS_TINY, Batch
from gpupool.errors import SignatureRejected
from gpupool.node.gpu import Inventory
from gpupool.node.health import create_health_app
from gpupool.node.metrics import NodeCollector, metrics_route
from gpupool.pow.api import pow_routes
from gpupool.pow.service import PowService, signed_batch
from tests.pow_helpers import BLOCK_HASH, ScriptedFactory, ScriptedGenerator, tiny_round

NODE = crypto.KeyPair.generate()
REFUSED = "Validation phase not supported in delegation mode"
P = "/api/v1/pow"


def no_inventory() -> Inventory:
    raise OSError("not needed here")


Make = Callable[..., Any]


@pytest.fixture
async def node_api() -> AsyncIterator[Make]:
    services: list[PowService] = []

    async def make(**kw: Any) -> tuple[httpx.AsyncClient, PowService]:
        service = PowService(NODE, "http://127.0.0.1:9", **kw)
        services.append(service)
        app = create_health_app(NODE.pubkey, "127.0.0.1", no_inventory, pow_routes(service))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node"), service

    yield make
    for service in services:
        await service.stop()


def round_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": 0,
        "node_count": 1,
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": NODE.pubkey,
        "batch_size": 32,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": PARAMS_TINY.to_dict(),
    }
    body.update(fields)
    return body


async def test_status_in_local_mode_before_and_during_a_round(node_api: Make) -> None:
    factory = ScriptedFactory(gpu_count=0)
    client, _ = await node_api(generator_factory=factory, poll_s=3600)
    status = (await client.get(f"{P}/status")).json()
    assert status == {"status": "IDLE", "is_model_initialized": False, "delegation_mode": False}
    resp = await client.post(f"{P}/init/generate", json=round_body())
    assert resp.status_code == 200, resp.text
    status = (await client.get(f"{P}/status")).json()
    assert status["delegation_mode"] is False and status["gpu_count"] == 0
    assert status["round"] == {"block_hash": BLOCK_HASH, "block_height": 7}
    assert {"nonces_per_s", "qualified_per_s", "batches_submitted"} <= set(status)
    assert factory.made[0].pow_round.public_key == NODE.pubkey
    resp = await client.post(f"{P}/stop")
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] == "STOPPED"
    assert factory.made[0].stopped


async def test_status_in_delegation_mode(node_api: Make) -> None:
    client, service = await node_api(delegation_url="http://127.0.0.1:9", delegation_token="t")
    status = (await client.get(f"{P}/status")).json()
    assert status["delegation_mode"] is True and status["status"] == "IDLE"
    assert service.delegation_mode
    # Blank settings mean local mode, as the seed's commented-out config.env does.
    client, service = await node_api(delegation_url=" ", delegation_token="t")
    assert (await client.get(f"{P}/status")).json()["delegation_mode"] is False


async def test_validation_is_refused_in_delegation_mode_with_the_reference_message(node_api: Make) -> None:
    client, _ = await node_api(delegation_url="http://127.0.0.1:9", delegation_token="t")
    for path, body in (
        (f"{P}/init/validate", round_body()),
        (f"{P}/validate", {"nonces": [1], "dist": [1.0]}),
    ):
        resp = await client.post(path, json=body)
        assert resp.status_code == 409 and resp.json()["detail"] == REFUSED


async def test_local_validation_accepts_an_honest_batch_and_catches_forged_distances(node_api: Make) -> None:
    client, _ = await node_api()
    small = crypto.KeyPair.generate()
    gen = ScriptedGenerator(tiny_round(small.pubkey, batch_size=64))
    honest = Batch.merge(gen.produce(2))
    assert (await client.post(f"{P}/init/validate", json=round_body())).status_code == 200

    resp = await client.post(f"{P}/validate", json=honest.to_dict())
    assert resp.status_code == 200, resp.text
    verdict = resp.json()
    assert verdict["fraud_detected"] is False and verdict["weight"] == len(honest) > 0
    assert verdict["validator"] == NODE.pubkey and verdict["n_sampled"] == len(honest)

    forged = Batch(honest.public_key, BLOCK_HASH, 7, honest.nonces, tuple(d - 0.2 for d in honest.dist))
    verdict = (await client.post(f"{P}/validate", json=forged.to_dict())).json()
    assert verdict["fraud_detected"] is True and verdict["weight"] == 0

    other_round = {**honest.to_dict(), "block_hash": "00" * 32}
    resp = await client.post(f"{P}/validate", json=other_round)
    assert resp.status_code == 409  # no round initialised for that block hash
    resp = await client.post(f"{P}/validate", json={**other_round, "params": "tiny"})
    assert resp.status_code == 200 and resp.json()["fraud_detected"] is True


async def test_a_node_generates_only_for_its_own_key(node_api: Make) -> None:
    factory = ScriptedFactory()
    client, _ = await node_api(generator_factory=factory)
    resp = await client.post(
        f"{P}/init/generate", json=round_body(public_key=crypto.KeyPair.generate().pubkey)
    )
    assert resp.status_code == 409 and "this node's key" in resp.json()["detail"]
    resp = await client.post(f"{P}/init/generate", json=round_body(node_id=1))
    assert resp.status_code == 422
    resp = await client.post(f"{P}/init/generate", content=b"not json")
    assert resp.status_code == 422
    assert factory.made == []


def test_a_signed_batch_verifies_only_for_the_signing_key() -> None:
    gen = ScriptedGenerator(tiny_round(NODE.pubkey))
    batch = gen.produce(1)[0]
    body = signed_batch(NODE, batch, created_at=1_700_000_000)
    event = crypto.verify_signed_body(body, kind=crypto.KIND_POC_BATCH, now=1_700_000_000)
    assert event["pubkey"] == NODE.pubkey and body["nonces"] == list(batch.nonces)
    # Anyone else's signature over it is by another key than the batch's public_key (the hub refuses
    # that; see tests/e2e/test_delegation_e2e.py), and an altered body no longer matches the event.
    thief = crypto.KeyPair.generate()
    stolen = signed_batch(thief, batch, created_at=1_700_000_000)
    assert crypto.verify_event(stolen["sig_event"])["pubkey"] == thief.pubkey != stolen["public_key"]
    tampered = {**body, "dist": [d - 0.1 for d in body["dist"]]}
    with pytest.raises(SignatureRejected):
        crypto.verify_signed_body(tampered, kind=crypto.KIND_POC_BATCH, now=1_700_000_000)


def test_pending_batches_are_joined_per_round_and_key_and_capped() -> None:
    from gpupool.pow.service import coalesce

    gen = ScriptedGenerator(tiny_round(NODE.pubkey))
    steps = gen.produce(4)
    other = Batch(crypto.KeyPair.generate().pubkey, BLOCK_HASH, 7, (1,), (1.0,))
    empty = Batch(NODE.pubkey, BLOCK_HASH, 7, (), ())
    joined = coalesce([steps[0], steps[1], empty, other, steps[2], steps[3]], max_nonces=10)
    assert [b.public_key for b in joined if b.public_key == other.public_key] == [other.public_key]
    mine = [b for b in joined if b.public_key == NODE.pubkey]
    assert all(0 < len(b) <= 10 for b in mine)
    assert [n for b in mine for n in b.nonces] == [n for s in steps for n in s.nonces]  # order kept
    assert joined.index(other) == next(i for i, b in enumerate(joined) if b.public_key != NODE.pubkey)


def test_poc_status_says_clearly_when_the_node_cannot_be_reached() -> None:
    from typer.testing import CliRunner

    from gpupool.cli.app import app
    from tests.conftest import free_port

    result = CliRunner().invoke(app, ["poc", "status", "--node", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot read" in result.output


async def test_metrics_show_the_rounds_throughput_and_the_nodes_own_state() -> None:
    factory = ScriptedFactory(gpu_count=2)
    service = PowService(NODE, "http://127.0.0.1:9", generator_factory=factory, poll_s=3600)
    running = {"tasks": 3}
    collector = NodeCollector(lambda: True, lambda: running["tasks"], service.status)
    app = create_health_app(
        NODE.pubkey, "127.0.0.1", no_inventory, [*pow_routes(service), metrics_route(collector)]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:

        async def scrape() -> dict[str, float]:
            resp = await client.get("/metrics")
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
            samples = [line.split(" ") for line in resp.text.splitlines() if line.startswith("gpupool_")]
            return {name: float(value) for name, value in samples}

        idle = await scrape()
        assert idle['gpupool_node_poc_state{state="IDLE"}'] == 1 and idle["gpupool_node_tasks_running"] == 3
        assert idle["gpupool_node_hub_connected"] == 1
        assert "gpupool_node_poc_nonces_computed_total" not in idle  # no round: no figure, not a 0
        assert (await client.post(f"{P}/init/generate", json=round_body())).status_code == 200
        factory.made[0].produce(steps=2)
        running["tasks"] = 1
        busy = await scrape()
        status = (await client.get(f"{P}/status")).json()
    await service.stop()
    assert (
        busy[f'gpupool_node_poc_state{{state="{status["status"]}"}}'] == 1
        and len([name for name in busy if name.startswith("gpupool_node_poc_state")]) == 1
    )
    assert busy["gpupool_node_tasks_running"] == 1
    assert busy["gpupool_node_poc_nonces_computed_total"] == status["nonces_computed"] == 64
    assert busy["gpupool_node_poc_qualified_per_second"] == status["qualified_per_s"]
