"""The node's PoW API as Gonka's MLNode API (SPEC §8.3), in-process, with a real callback HTTP server.

The requests are the ones Gonka's decentralized-api sends (``mlnodeclient/poc.go``: ``InitDto``, the
sampled ``ProofBatch``) and its ML node's own client sends (``pow/service/client.py``); the answers and the
bodies posted to ``{url}/generated`` and ``{url}/validated`` are checked field by field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from gpupool import crypto
from gpupool.core.poc import PARAMS_TINY, PocModel
from gpupool.node.gpu import Inventory
from gpupool.node.health import create_health_app
from gpupool.pow.api import pow_routes
from gpupool.pow.service import PowService
from tests.callback_server import CallbackServer, gonka_key_forms, running_callback
from tests.pow_helpers import BLOCK_HASH, ScriptedFactory

NODE = crypto.KeyPair.generate()
FOREIGN = gonka_key_forms()["hex66"]
P = "/api/v1/pow"
PROOF_BATCH = ["public_key", "block_hash", "block_height", "nonces", "dist", "node_id"]
VALIDATED_BATCH = [
    *PROOF_BATCH,
    "received_dist",
    "r_target",
    "fraud_threshold",
    "n_invalid",
    "probability_honest",
    "fraud_detected",
]
GO_PARAMS = {  # mlnodeclient.Params, as the Go client marshals it (rope_theta is an int there)
    **PARAMS_TINY.to_dict(),
    "rope_theta": 10000,
}


def no_inventory() -> Inventory:
    raise OSError("not needed here")


def init_dto(url: str, public_key: str = FOREIGN, **fields: Any) -> dict[str, Any]:
    """Gonka's ``InitDto`` in the Go client's field order."""
    body: dict[str, Any] = {
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": public_key,
        "batch_size": 32,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": GO_PARAMS,
        "node_id": 0,
        "node_count": 1,
        "url": url,
    }
    body.update(fields)
    return body


Make = Callable[..., Any]


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    with running_callback() as server:
        yield server


@pytest.fixture
async def node_api() -> AsyncIterator[Make]:
    services: list[PowService] = []

    async def make(
        allow: tuple[str, ...] = ("127.0.0.0/8",), **kw: Any
    ) -> tuple[httpx.AsyncClient, PowService, ScriptedFactory]:
        factory = ScriptedFactory(gpu_count=1)
        options: dict[str, Any] = {
            "generator_factory": factory,
            "poll_s": 0.05,
            "backoff_max_s": 0.2,
            "serve_foreign": True,
        }
        service = PowService(NODE, "http://127.0.0.1:9", **{**options, **kw})
        services.append(service)
        app = create_health_app(NODE.pubkey, "127.0.0.1", no_inventory, pow_routes(service, allow))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")
        return client, service, factory

    yield make
    for service in services:
        await service.stop()


async def test_gonka_drives_generation_then_validation_and_gets_both_at_its_callback(
    node_api: Make, callback: CallbackServer
) -> None:
    client, _, factory = await node_api()
    assert (await client.get("/api/v1/state")).json() == {"state": "STOPPED"}
    assert (await client.post("/api/v1/stop")).json() == {"status": "OK"}

    resp = await client.post(f"{P}/init/generate", json=init_dto(callback.url))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "OK" and "status" in resp.json()["pow_status"]
    assert (await client.get("/api/v1/state")).json() == {"state": "POW"}
    (generator,) = factory.made
    assert generator.pow_round.public_key == FOREIGN  # the exact string, not a normalised key
    produced = generator.produce(steps=3)
    want = [n for b in produced for n in b.nonces]
    assert want, "tiny params qualify some nonces in three steps"

    got = await _nonces_at(callback, len(want))
    assert got == want  # in order, none twice
    model = PocModel.build(BLOCK_HASH, PARAMS_TINY)
    for body in callback.bodies("generated"):
        assert list(body) == PROOF_BATCH
        assert (body["public_key"], body["block_hash"], body["block_height"], body["node_id"]) == (
            FOREIGN,
            BLOCK_HASH,
            7,
            0,
        )
        assert body["dist"] == pytest.approx(model.distances(FOREIGN, body["nonces"]).tolist(), abs=1e-9)
    status = (await client.get(f"{P}/status")).json()
    assert status["status"] == "GENERATING" and status["is_model_initialized"] is True

    resp = await client.post(f"{P}/init/validate", json=init_dto(callback.url))
    assert resp.status_code == 200, resp.text
    assert (await client.get(f"{P}/status")).json()["status"] == "VALIDATING"
    assert generator.stopped
    honest = callback.bodies("generated")[0]
    sample = {k: honest[k] for k in PROOF_BATCH}  # Go's sampled ProofBatch: node_id 0 when unset
    forged = {**sample, "dist": [d - 0.3 for d in sample["dist"]]}
    for body in (sample, forged):
        resp = await client.post(f"{P}/validate", json=body)
        assert resp.status_code == 200 and resp.json() == {"status": "OK"}

    first, second = await callback.arrived("validated", 2)
    for verdict, sent in ((first, sample), (second, forged)):
        assert list(verdict) == VALIDATED_BATCH
        assert verdict["nonces"] == sent["nonces"] and verdict["received_dist"] == sent["dist"]
        assert verdict["public_key"] == FOREIGN and verdict["r_target"] == 1.4013564660458173
        assert verdict["dist"] == pytest.approx(honest["dist"], abs=1e-9)
    assert first["n_invalid"] == 0 and first["probability_honest"] == 1.0 and first["fraud_detected"] is False
    assert second["n_invalid"] == 0 and second["fraud_detected"] is False  # recomputed still qualify
    # A batch whose recomputed distances do not qualify is fraud.
    fake = {**sample, "nonces": [n + 10_000 for n in sample["nonces"]]}
    assert (await client.post(f"{P}/validate", json=fake)).status_code == 200
    third = (await callback.arrived("validated", 3))[2]
    assert third["n_invalid"] > 0 and third["fraud_detected"] is (third["probability_honest"] < 1e-7)

    assert (await client.post("/api/v1/stop")).json() == {"status": "OK"}
    assert (await client.get("/api/v1/state")).json() == {"state": "STOPPED"}
    assert (await client.post(f"{P}/stop")).json() == {"status": "OK", "pow_status": "PoW is not running"}


async def _nonces_at(callback: CallbackServer, count: int) -> list[int]:
    for _ in range(1200):
        got = [n for b in callback.bodies("generated") for n in b["nonces"]]
        if len(got) >= count:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} nonces did not reach the callback")


async def test_a_callback_that_fails_gets_every_batch_again_in_order_and_none_twice(node_api: Make) -> None:
    client, _, factory = await node_api()
    with running_callback(fail_first=4) as flaky:
        resp = await client.post(f"{P}/init/generate", json=init_dto(flaky.url))
        assert resp.status_code == 200, resp.text
        want: list[int] = []
        for _ in range(3):
            want += [n for b in factory.made[0].produce(steps=2) for n in b.nonces]
            await asyncio.sleep(0.1)
        got = await _nonces_at(flaky, len(want))
        assert flaky.refused == 4
        assert got == want and len(set(got)) == len(got)
        status = (await client.get(f"{P}/status")).json()
        assert status["nonces_submitted"] == len(want) and "callback" in (status["last_error"] or "")


async def test_validated_batches_are_retried_in_the_order_they_came(node_api: Make) -> None:
    client, _, _ = await node_api()
    with running_callback(fail_first=3) as flaky:
        assert (await client.post(f"{P}/init/validate", json=init_dto(flaky.url))).status_code == 200
        model = PocModel.build(BLOCK_HASH, PARAMS_TINY)
        sent = []
        for start in (0, 10, 20):
            nonces = list(range(start, start + 4))
            dist = model.distances(FOREIGN, nonces).tolist()
            body = {"public_key": FOREIGN, "block_hash": BLOCK_HASH, "block_height": 7,
                    "nonces": nonces, "dist": dist, "node_id": 0}  # fmt: skip
            sent.append(nonces)
            assert (await client.post(f"{P}/validate", json=body)).status_code == 200
        got = await flaky.arrived("validated", 3)
        assert [v["nonces"] for v in got] == sent and flaky.refused == 3


async def test_the_forks_own_client_calls_and_its_400s(node_api: Make, callback: CallbackServer) -> None:
    """``PowClient`` of the fork: init (no public_key, no node ids), phases, and the 400 details."""
    client, _, factory = await node_api()
    resp = await client.post(f"{P}/phase/generate")
    assert resp.status_code == 400 and resp.json()["detail"] == "PoW is not running"
    resp = await client.post(f"{P}/phase/validate")
    assert resp.status_code == 400 and resp.json()["detail"] == "PoW is not running"
    resp = await client.post(f"{P}/init/generate", json=init_dto(callback.url, node_id=-1))
    assert resp.status_code == 400 and resp.json()["detail"] == "Node ID and node count must be set"

    fork_init = {
        "url": callback.url,
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": GO_PARAMS,
    }
    resp = await client.post(f"{P}/init", json=fork_init)
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] == "IDLE"
    assert (await client.get("/api/v1/state")).json() == {"state": "POW"}
    resp = await client.post(f"{P}/phase/generate")
    assert resp.status_code == 400
    assert resp.json()["detail"] == "Node ID and node count must be set to start generating"
    assert factory.made == []

    resp = await client.post(f"{P}/init", json=init_dto(callback.url))
    assert resp.status_code == 200
    resp = await client.post(f"{P}/phase/generate")
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] in ("LOADING", "GENERATING")
    assert factory.made[0].pow_round.public_key == FOREIGN
    resp = await client.post(f"{P}/phase/validate")
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] == "VALIDATING"
    resp = await client.post(f"{P}/init/validate", json=fork_init)  # PowClient.init_validate: no key
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] == "VALIDATING"
    resp = await client.post(f"{P}/stop")
    assert resp.status_code == 200 and resp.json()["pow_status"]["status"] == "STOPPED"


async def test_foreign_keys_need_the_mlnode_api_a_url_and_an_allowed_caller(
    node_api: Make, callback: CallbackServer
) -> None:
    off, _, factory = await node_api(serve_foreign=False)
    resp = await off.post(f"{P}/init/generate", json=init_dto(callback.url))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "foreign_key"
    on, _, _ = await node_api()
    for url in ("", "ftp://x/y", "not a url"):
        resp = await on.post(f"{P}/init/generate", json=init_dto(url))
        assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "url", url
    for bad_key in ("04" + "ab" * 32, "02" + "00" * 32, "hello", "A" * 101):
        resp = await on.post(f"{P}/init/generate", json=init_dto(callback.url, public_key=bad_key))
        assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "public_key"
    assert factory.made == []
    assert (await on.post(f"{P}/init/validate", json=init_dto(callback.url))).status_code == 200
    huge = {"public_key": FOREIGN, "block_hash": BLOCK_HASH, "block_height": 7, "node_id": 0,
            "nonces": list(range(10_001)), "dist": [1.0] * 10_001}  # fmt: skip
    resp = await on.post(f"{P}/validate", json=huge)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "nonces"

    fenced, _, _ = await node_api(allow=("10.0.0.0/8", "fd00::/8"))
    for method, path in (("GET", f"{P}/status"), ("POST", f"{P}/init/generate"), ("GET", "/api/v1/state"),
                         ("POST", "/api/v1/stop"), ("POST", f"{P}/validate")):  # fmt: skip
        resp = await fenced.request(method, path, json=init_dto(callback.url))
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "caller_not_allowed", path
    # Without the MLNode API nothing is fenced: the node's own key works as before.
    resp = await off.post(f"{P}/init/generate", json=init_dto(callback.url, public_key=NODE.pubkey))
    assert resp.status_code == 200


def test_the_switch_is_off_by_default_and_the_networks_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from gpupool.config import NodeSettings

    monkeypatch.delenv("GPUPOOL_NODE_MLNODE_API", raising=False)
    monkeypatch.delenv("GPUPOOL_NODE_MLNODE_ALLOW_CIDRS", raising=False)
    default = NodeSettings(_env_file=None)  # type: ignore[call-arg]
    assert default.mlnode_api is False and default.mlnode_allow_cidrs == ["127.0.0.0/8", "::1/128"]
    monkeypatch.setenv("GPUPOOL_NODE_MLNODE_API", "true")
    monkeypatch.setenv("GPUPOOL_NODE_MLNODE_ALLOW_CIDRS", "10.1.0.0/16, fd00::/8")
    on = NodeSettings(_env_file=None)  # type: ignore[call-arg]
    assert on.mlnode_api is True and on.mlnode_allow_cidrs == ["10.1.0.0/16", "fd00::/8"]
    monkeypatch.setenv("GPUPOOL_NODE_MLNODE_ALLOW_CIDRS", "10.1.0.0/16,everyone")
    with pytest.raises(ValidationError):
        NodeSettings(_env_file=None)  # type: ignore[call-arg]
