"""Gonka's key forms seed the PoC as the exact strings given (SPEC §8.3), wherever a key only seeds it.

A Gonka participant's PoC key is a 66-hex compressed secp256k1 key (base64 of those 33 bytes appears
too); ours are 64-hex x-only. Each form is another seed string, so each gives its own distances: the
ones of that exact string, from the CLI, the delegation service and the node's validation alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from gpupool import crypto
from gpupool.cli.app import app as cli_app
from gpupool.config import DelegationSettings
from gpupool.core.poc import PARAMS_TEST, PARAMS_TINY, PocModel
from gpupool.delegation.app import create_delegation_app
from gpupool.errors import InvalidInput
from gpupool.pow.rounds import PowRound
from tests.callback_server import gonka_key_forms
from tests.pow_helpers import BLOCK_HASH, ScriptedFactory

FORMS = gonka_key_forms(bytes.fromhex("11" * 32))
TOKEN = "key-forms-token"


def test_each_form_is_accepted_as_given_and_nonsense_is_refused() -> None:
    for form in (*FORMS.values(), FORMS["xonly"].upper()):
        assert crypto.poc_public_key(form) == form
    npub = crypto.npub_encode(FORMS["xonly"])
    assert crypto.poc_public_key(npub) == FORMS["xonly"]  # our Nostr input form, as the node signs
    for bad in ("", "04" + FORMS["hex66"][2:], "02" + "00" * 32, FORMS["hex66"][:-2], " " + FORMS["hex66"],
                FORMS["base64"][:-4], "x" * 64, "npub1qqqq"):  # fmt: skip
        with pytest.raises(InvalidInput):
            crypto.poc_public_key(bad)


def test_gpupool_poc_dist_gives_the_distances_of_the_exact_string() -> None:
    model = PocModel.build(BLOCK_HASH, PARAMS_TEST)
    seen = {}
    for name, form in FORMS.items():
        result = CliRunner().invoke(
            cli_app,
            ["poc", "dist", "--params", "test", "--block-hash", BLOCK_HASH, "--public-key", form,
             "--nonces", "0-7"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["dist"] == model.distances(form, range(8)).tolist(), name
        seen[name] = tuple(out["dist"])
    assert len(set(seen.values())) == 3  # three strings, three seeds: no form is rewritten into another
    result = CliRunner().invoke(
        cli_app, ["poc", "dist", "--params", "test", "--block-hash", BLOCK_HASH, "--public-key", "02zz",
                  "--nonces", "0-3"],
    )  # fmt: skip
    assert result.exit_code == 2 and "66 hex" in result.output


def test_a_round_keeps_the_key_string_it_was_given() -> None:
    body = {"block_hash": BLOCK_HASH, "block_height": 3, "params": "tiny"}
    for form in FORMS.values():
        assert PowRound.from_json({**body, "public_key": form}).public_key == form


@pytest.fixture
async def big_node() -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedFactory]]:
    factory = ScriptedFactory(gpu_count=1)
    app = create_delegation_app(DelegationSettings(auth_token=TOKEN), factory=factory)
    async with LifespanManager(app) as lifespan:
        transport = httpx.ASGITransport(app=lifespan.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://big") as client:
            yield client, factory


def start_body(public_key: str) -> dict[str, Any]:
    return {
        "node_id": 0,
        "node_count": 1,
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": public_key,
        "batch_size": 16,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": PARAMS_TINY.to_dict(),
        "auth_token": TOKEN,
    }


async def test_delegation_start_takes_each_form_and_its_batches_carry_that_string(
    big_node: tuple[httpx.AsyncClient, ScriptedFactory],
) -> None:
    client, factory = big_node
    model = PocModel.build(BLOCK_HASH, PARAMS_TINY)
    for i, form in enumerate(FORMS.values()):
        resp = await client.post("/api/v1/delegation/start", json=start_body(form))
        assert resp.status_code == 200, resp.text
        factory.made[i].produce(steps=4)
        got = await client.get(f"/batches/{resp.json()['session_id']}", params={"auth_token": TOKEN})
        batches = got.json()["batches"]
        assert batches and all(b["public_key"] == form for b in batches)
        for b in batches:
            assert b["dist"] == model.distances(form, b["nonces"]).tolist()
    resp = await client.post("/start", json=start_body("02" + "00" * 32))
    assert resp.status_code == 422 and "66 hex" in resp.json()["detail"]


async def test_validation_recomputes_each_form_as_its_own_string() -> None:
    """A batch honest for one form is fraud when claimed under another form of the same key."""
    from gpupool.core.poc import Batch
    from gpupool.node.health import create_health_app
    from gpupool.pow.api import pow_routes
    from gpupool.pow.service import PowService

    node = crypto.KeyPair.generate()

    def no_inventory() -> Any:
        raise OSError("not needed here")

    service = PowService(node, "http://127.0.0.1:9")
    app = create_health_app(node.pubkey, "127.0.0.1", no_inventory, pow_routes(service))
    model = PocModel.build(BLOCK_HASH, PARAMS_TINY)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        init = {"block_hash": BLOCK_HASH, "block_height": 7, "params": PARAMS_TINY.to_dict()}
        assert (await client.post("/api/v1/pow/init/validate", json=init)).status_code == 200
        forms = list(FORMS.values())
        for form, other in zip(forms, [*forms[1:], forms[0]], strict=True):
            dist = model.distances(form, range(64))
            keep = [n for n in range(64) if dist[n] < 1.4013564660458173]
            honest = Batch(form, BLOCK_HASH, 7, tuple(keep), tuple(float(dist[n]) for n in keep))
            verdict = (await client.post("/api/v1/pow/validate", json=honest.to_dict())).json()
            assert verdict["public_key"] == form and verdict["fraud_detected"] is False, form
            moved = Batch(other, BLOCK_HASH, 7, honest.nonces, honest.dist)
            verdict = (await client.post("/api/v1/pow/validate", json=moved.to_dict())).json()
            assert verdict["fraud_detected"] is True, (form, other)
    await service.stop()
