"""The node agent with a DStack GPU service (SPEC §8.4): started before DStack, it answers as the
DStack backend does (503, ``Error: …``) and registers once DStack answers, offering only free GPUs.

The DStack service is the hardware edge (it lists the machine's GPUs), so the test plays it with a
small HTTP server giving the ``ListGpus`` body of the backend's ``DStackResponse``.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.test_node_agent import HUB_ENV, admin_token, wait_for
from tests.factories import OWNER
from tests.procs import HubProcess, NodeProcess

pytestmark = pytest.mark.slow

LIST_GPUS = {
    "gpus": [
        {
            "slot": "0000:18:00.0",
            "product_id": "10de:2335",
            "description": "NVIDIA H200 141GB",
            "is_free": True,
        },
        {
            "slot": "0000:2a:00.0",
            "product_id": "10de:2335",
            "description": "NVIDIA H200 141GB",
            "is_free": False,
        },
    ],
    "allow_attach_all": True,
}


class _ListGpus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(LIST_GPUS).encode()
        self.send_response(200 if self.path == "/prpc/ListGpus?json" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    proc = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, **HUB_ENV)
    proc.start()
    yield proc
    proc.stop()


def test_agent_starts_before_dstack_answers_503_then_registers_its_free_gpus(
    hub: HubProcess, tmp_path: Path
) -> None:
    port = free_port()
    node = NodeProcess(
        hub.url,
        tmp_path,
        OWNER,
        GPUPOOL_NODE_MINER_ID="dstack-node",
        DSTACK_BACKEND_DSTACK_URL=f"http://127.0.0.1:{port}",
    )
    node.start()
    server: ThreadingHTTPServer | None = None
    try:
        health = node.wait_healthy()
        resp = httpx.get(f"{node.url}/health", headers={"Origin": "http://dashboard.example"})
        assert resp.status_code == 503 and resp.headers["access-control-allow-origin"] == "*"
        assert health["status"] == "Unavailable" and str(health["metadata"]).startswith("Error: ")
        assert health["version"] == "1.0.0" and health["topic"] == "dstack-gpu-monitor"
        headers = admin_token(hub)
        assert httpx.get(f"{hub.url}/v1/miners/dstack-node", headers=headers).status_code == 404

        server = ThreadingHTTPServer(("127.0.0.1", port), _ListGpus)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        wait_for(
            lambda: httpx.get(f"{hub.url}/v1/miners/dstack-node", headers=headers).status_code == 200,
            20,
            "registration once DStack answers",
        )
        miner = httpx.get(f"{hub.url}/v1/miners/dstack-node", headers=headers).json()
        assert [g["name"] for g in miner["gpus"]] == ["NVIDIA H200 141GB"]  # the busy one is not offered
        wait_for(lambda: httpx.get(f"{node.url}/health").status_code == 200, 10, "health Available")
        metadata = json.loads(str(httpx.get(f"{node.url}/health").json()["metadata"]))
        first = metadata["gpus"][0]
        assert list(first)[:4] == ["slot", "product_id", "description", "is_free"]  # the backend's keys first
        assert metadata["gpu_count"] == 2 and metadata["allow_attach_all"] is True
    finally:
        assert node.stop(signal.SIGTERM) == 0
        if server is not None:
            server.shutdown()
            server.server_close()
