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
        self.inbox: list[dict[str, Any]] = []  # messages read while waiting for another kind
        self.running: dict[str, None] = {}  # tasks assigned and not reported yet, in order
        self.lists_tasks = True  # heartbeats say which tasks run (``running_task_ids``)

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
        body: dict[str, Any] = {"ts": self.clock.now(), "queue_len": len(self.running)}
        if self.lists_tasks:
            body["running_task_ids"] = list(self.running)
        await self.ws.send(json.dumps(body))

    async def command(self, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next message of this kind (kept ones first); others read meanwhile are kept."""
        for i, kept in enumerate(self.inbox):
            if kept.get("type") == kind:
                return self.inbox.pop(i)
        while True:
            message = dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s)))
            for one in message.get("messages", [message]) if message.get("type") == "batch" else [message]:
                if one.get("type") == "assign":
                    self.running[str(one["task"]["task_id"])] = None
            if message.get("type") == kind:
                return message
            self.inbox.append(message)

    async def run_for(self, seconds: float, step_s: float = 10.0) -> None:
        """Let ``seconds`` pass on the hub's clock while the node runs its tasks and keeps beating.

        In steps shorter than the hub's grace period, each beat answered before the next step, so
        the hub sees a live node that runs what it lists.
        """
        self.inbox = [m for m in self.inbox if m.get("type") != "ack"]
        left = seconds
        while left > 0:
            self.clock.advance(min(step_s, left))
            left -= step_s
            await self.beat()
            await self.command("ack")

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
        self.running.pop(task_id, None)
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


async def run_together(nodes: list[SimNode], seconds: float, step_s: float = 10.0) -> None:
    """``SimNode.run_for`` for several nodes on one clock: each beats at every step."""
    for node in nodes:
        node.inbox = [m for m in node.inbox if m.get("type") != "ack"]
    left = seconds
    while left > 0:
        nodes[0].clock.advance(min(step_s, left))
        left -= step_s
        for node in nodes:
            await node.beat()
        for node in nodes:
            await node.command("ack")
