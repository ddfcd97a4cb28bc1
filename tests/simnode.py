"""A node played by the test itself over the real protocol: signed registration, heartbeat socket,
session-token reports and signed results, so every hub rule can be driven step by step."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from gpupool import crypto
from gpupool.core.ports import FakeClock
from gpupool.heartbeat_protocol import BATCH_SUBPROTOCOL
from tests.conftest import LiveHub
from tests.factories import registration

PRICE = 2_000_000  # micro-units per 1000 GPU-seconds: 2 tokens


class SimNode:
    """One node speaking the protocol over a real socket."""

    def __init__(
        self, hub: LiveHub, clock: FakeClock, miner_id: str, *, batching: bool = False, **fields: Any
    ) -> None:
        """``batching``: offer the heartbeat socket's batch subprotocol, as the node agent does."""
        self.hub, self.clock, self.miner_id, self.batching = hub, clock, miner_id, batching
        self.key = crypto.KeyPair.generate()
        self.fields = {"price_micro_per_ksec": PRICE, "max_parallel": 1, **fields}
        self.token = ""
        self.ws: Any = None

    async def connect(self) -> None:
        body = registration(self.key, self.clock, miner_id=self.miner_id, **self.fields)
        resp = await self.hub.http.post("/v1/miners/register", json=body)
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["session_token"]
        self.ws = await websockets.connect(
            f"{self.hub.ws_url}/v1/miners/heartbeat?session_token={self.token}",
            subprotocols=[Subprotocol(BATCH_SUBPROTOCOL)] if self.batching else None,
        )
        await self.beat()

    async def beat(self) -> None:
        await self.ws.send(json.dumps({"ts": self.clock.now(), "queue_len": 0}))

    async def command(self, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
            if message.get("type") == kind:
                return dict(message)

    async def output(self, task_id: str, seq: int, data: str, stream: str = "stdout") -> httpx.Response:
        return await self.hub.http.post(
            f"/v1/tasks/{task_id}/output",
            json={"seq": seq, "stream": stream, "data": data},
            headers={"X-Session-Token": self.token},
        )

    async def upload(self, task_id: str, path: str, content: bytes, sha256: str) -> httpx.Response:
        return await self.hub.http.put(
            f"/v1/tasks/{task_id}/artifacts/{path}",
            content=content,
            headers={"X-Session-Token": self.token, "X-Content-SHA256": sha256},
        )

    async def result(self, task_id: str, **kw: Any) -> httpx.Response:
        """The signed result (``signed_result``: artifacts uploaded first) sent over HTTP."""
        signed = await self.signed_result(task_id, **kw)
        return await self.hub.http.post(
            f"/v1/tasks/{task_id}/result", json=signed, headers={"X-Session-Token": self.token}
        )

    async def result_on_socket(self, task_id: str, gpu_seconds: float = 500.0, **kw: Any) -> dict[str, Any]:
        """The same signed result sent on the heartbeat socket; the hub's ``result_ack``."""
        signed = await self.signed_result(task_id, gpu_seconds=gpu_seconds, **kw)
        await self.ws.send(json.dumps({"type": "result", "result": signed}))
        return await self.command("result_ack")

    async def signed_result(
        self,
        task_id: str,
        exit_code: int = 0,
        status: str = "succeeded",
        gpu_seconds: float = 500.0,
        key: crypto.KeyPair | None = None,
        files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        artifacts = []
        for path, content in (files if files is not None else {"out.txt": b"abc"}).items():
            digest = hashlib.sha256(content).hexdigest()
            resp = await self.upload(task_id, path, content, digest)
            if resp.status_code == 201:
                artifacts.append({"path": path, "size": len(content), "sha256": digest})
        body = {
            "task_id": task_id,
            "exit_code": exit_code,
            "status": status,
            "usage": {"gpu_seconds": gpu_seconds, "duration_sec": gpu_seconds, "cpu_seconds": 1.0},
            "artifacts": artifacts,
        }
        return crypto.sign_body(
            key or self.key, crypto.KIND_TASK_RESULT, body, created_at=int(self.clock.now())
        )
