"""A gpupool node as Gonka's ML node, driven as Gonka's decentralized-api drives one, in real processes.

The steps are the API node's (``broker/node_worker_commands.go``, ``internal/poc/node_orchestrator.go``):
check ``/api/v1/state`` and ``/api/v1/pow/status``, ``init/generate`` with an ``InitDto`` for the
participant's 66-hex key and its callback ``url``; take ``ProofBatch``es at ``{url}/generated``; then
``init/validate``, post the joined, de-duplicated batch to ``/api/v1/pow/validate`` and take the
``ValidatedBatch`` at ``{url}/validated``; finally ``/api/v1/stop``. The API node here is a small real
HTTP server in this test process; the node is ``gpupool node`` with ``GPUPOOL_NODE_MLNODE_API=true``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.core.poc import PARAMS_TINY, PocModel
from tests.callback_server import gonka_key_forms, running_callback
from tests.factories import OWNER
from tests.procs import NodeProcess, running_hub

pytestmark = pytest.mark.slow
BLOCK_HASH = "9c1e" * 16
R_TARGET = 1.4013564660458173


def init_dto(key: str, url: str) -> dict[str, Any]:
    """``mlnodeclient.BuildInitDto`` with test params (the Go client sends TestNet/MainNet ones)."""
    return {
        "block_hash": BLOCK_HASH,
        "block_height": 1200,
        "public_key": key,
        "batch_size": 100,
        "r_target": R_TARGET,
        "fraud_threshold": 1e-7,
        "params": {**PARAMS_TINY.to_dict(), "rope_theta": 10000},
        "node_id": 0,
        "node_count": 1,
        "url": url,
    }


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def test_gonka_api_node_drives_generation_and_validation_of_a_gpupool_node(tmp_path: Path) -> None:
    key = gonka_key_forms(bytes.fromhex("22" * 32))["hex66"]  # fixed: the same nonces qualify each run
    with running_hub(tmp_path) as hub, running_callback(fail_first=2) as api:
        node = NodeProcess(
            hub.url,
            tmp_path,
            OWNER,
            GPUPOOL_NODE_MINER_ID="gonka-mlnode",
            GPUPOOL_NODE_MLNODE_API="true",
            GPUPOOL_NODE_POC_DEVICE="cpu",
            DELEGATION_POLL_SEC="0.3",
            DELEGATION_URL="",
            DELEGATION_AUTH_TOKEN="",
        )
        node.start()
        try:
            node.wait_healthy()
            ml = httpx.Client(base_url=node.url, timeout=30)
            assert ml.get("/api/v1/state").json() == {"state": "STOPPED"}
            resp = ml.post("/api/v1/pow/init/generate", json=init_dto(key, api.url))
            assert resp.status_code == 200, resp.text
            assert ml.get("/api/v1/state").json() == {"state": "POW"}
            generated = api.wait_for("generated", 3, timeout_s=90)
            assert api.refused == 2  # the first two posts failed and were sent again
            status = ml.get("/api/v1/pow/status").json()
            assert status["status"] == "GENERATING" and status["is_model_initialized"] is True

            nonces = [n for b in generated for n in b["nonces"]]
            assert len(nonces) == len(set(nonces))  # in order, none twice, even across the retries
            model = PocModel.build(BLOCK_HASH, PARAMS_TINY)
            for b in generated:
                assert (b["public_key"], b["block_height"], b["node_id"]) == (key, 1200, 0)
                assert max(b["dist"]) < R_TARGET
                assert b["dist"] == pytest.approx(model.distances(key, b["nonces"]).tolist(), abs=2e-4)

            resp = ml.post("/api/v1/pow/init/validate", json=init_dto(key, api.url))
            assert resp.status_code == 200, resp.text
            assert ml.get("/api/v1/pow/status").json()["status"] == "VALIDATING"
            joined = {
                "public_key": key,
                "block_hash": BLOCK_HASH,
                "block_height": 1200,
                "nonces": nonces[:200],
                "dist": [d for b in generated for d in b["dist"]][:200],
                "node_id": 0,  # Go's zero value: the sampled batch never sets it
            }
            forged = {**joined, "nonces": [n + 1 for n in joined["nonces"]]}  # others' distances claimed
            for body in (joined, forged):
                resp = ml.post("/api/v1/pow/validate", json=body)
                assert resp.status_code == 200 and resp.json() == {"status": "OK"}
            honest, caught = api.wait_for("validated", 2, timeout_s=90)
            assert honest["nonces"] == joined["nonces"] and honest["received_dist"] == joined["dist"]
            assert honest["n_invalid"] == 0 and honest["fraud_detected"] is False
            assert caught["n_invalid"] > 0 and caught["fraud_detected"] is True

            assert ml.post("/api/v1/stop").json() == {"status": "OK"}
            assert ml.get("/api/v1/state").json() == {"state": "STOPPED"}
            settled = len(api.bodies("generated"))
            time.sleep(1.0)
            assert len(api.bodies("generated")) == settled  # nothing more after the stop
        finally:
            assert node.stop() == 0
    log = node.log_path.read_text()
    assert "MLNode API on" in log
