"""The node agent's heartbeat socket against the real hub, in-process: commands in, results out.

The agent offers the batch extension (``heartbeat_protocol``); results ready together leave in one
envelope and each gets its own acknowledgement. Against a hub that does not take the extension it
speaks the plain protocol of SPEC §3.2, one frame per result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gpupool import crypto, wire
from gpupool.config import NodeSettings
from gpupool.core.ports import FakeClock
from gpupool.node import agent as agent_module
from gpupool.node.agent import NodeAgent
from gpupool.node.hub_client import HubClient
from tests.conftest import LiveHub
from tests.factories import OWNER


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())  # the agent signs with the wall clock


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


@contextlib.asynccontextmanager
async def running_agent(
    hub: LiveHub, data_dir: Path
) -> AsyncIterator[tuple[NodeAgent, list[wire.Assign | wire.Stop]]]:
    """A registered agent with its heartbeat socket open; the commands it received, in order."""
    settings = NodeSettings(registry_url=hub.url, owner_address=OWNER, data_dir=data_dir, max_parallel=4)
    agent = NodeAgent(settings, hub.url, OWNER, crypto.KeyPair.generate())
    commands: list[wire.Assign | wire.Stop] = []
    agent.on_command = commands.append
    async with HubClient(hub.url, timeout_s=10) as client:
        agent.attach(client)
        await agent.register(client)
        stop = asyncio.Event()
        beats = asyncio.create_task(agent.heartbeat_forever(client, stop))
        try:
            await asyncio.wait_for(agent.connected.wait(), 10)
            yield agent, commands
        finally:
            stop.set()
            await beats


async def _three_assigned(hub: LiveHub, commands: list[wire.Assign | wire.Stop]) -> list[str]:
    user = await hub.make_user("agent-user", balance=100_000_000)
    body = {"command": ["true"], "max_price_micro_per_ksec": 1_000_000, "timeout_sec": 10}
    resp = await hub.http.post("/v1/tasks/batch", json={"tasks": [body] * 3}, headers=user)
    ids = [t["task_id"] for t in resp.json()["tasks"]]
    for _ in range(500):
        if len(commands) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(c.task.task_id for c in commands if isinstance(c, wire.Assign)) == sorted(ids)
    return ids


async def _report_together(agent: NodeAgent, ids: list[str]) -> tuple[list[int | None], list[dict[str, Any]]]:
    """Report a result for each task in one tick; the answers and the frames the agent sent."""
    assert agent._socket is not None
    socket, frames = agent._socket, []
    send = socket.send

    async def recording(message: Any, *args: Any, **kw: Any) -> None:
        frames.append(json.loads(message))
        await send(message, *args, **kw)

    socket.send = recording  # type: ignore[method-assign]
    signed = [
        crypto.sign_body(
            agent.key,
            crypto.KIND_TASK_RESULT,
            {
                "task_id": t,
                "exit_code": 0,
                "status": "succeeded",
                "usage": {"gpu_seconds": 1.0},
                "artifacts": [],
            },
            created_at=int(time.time()),
        )
        for t in ids
    ]
    answers = await asyncio.gather(*(agent.report(t, s) for t, s in zip(ids, signed, strict=True)))
    return list(answers), frames


async def test_results_ready_together_leave_in_one_envelope_and_are_each_acknowledged(
    hub: LiveHub, tmp_path: Path
) -> None:
    async with running_agent(hub, tmp_path) as (agent, commands):
        ids = await _three_assigned(hub, commands)
        answers, frames = await _report_together(agent, ids)
    assert answers == [200, 200, 200]
    assert len(frames) == 1 and frames[0]["type"] == "batch"
    assert [m["result"]["task_id"] for m in frames[0]["messages"]] == ids
    admin = await hub.admin_headers()
    for task_id in ids:
        task = (await hub.http.get(f"/v1/tasks/{task_id}", headers=admin)).json()
        assert task["status"] == "succeeded" and task["cost"] == 1_000  # 1,000,000/ksec x 1 s


async def test_against_a_hub_without_the_extension_the_agent_speaks_the_plain_protocol(
    hub: LiveHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An agent offering a subprotocol this hub does not know is what an older hub sees of ours.
    monkeypatch.setattr(agent_module, "BATCH_SUBPROTOCOL", "gpupool.batch.v0-unknown")
    async with running_agent(hub, tmp_path) as (agent, commands):
        assert agent._socket is not None and agent._socket.subprotocol is None
        ids = await _three_assigned(hub, commands)
        assert all(isinstance(c, wire.Assign) for c in commands)
        answers, frames = await _report_together(agent, ids)
    assert answers == [200, 200, 200]
    assert [f["type"] for f in frames] == ["result"] * 3


async def test_the_agent_says_which_tasks_it_runs_on_every_beat_and_registration(
    hub: LiveHub, tmp_path: Path
) -> None:
    async with running_agent(hub, tmp_path) as (agent, _commands):
        agent.running_source = lambda: ["t-1", "t-2"]
        beat = agent.heartbeat_body()
        assert beat.running_task_ids == ["t-1", "t-2"]
        assert wire.decode(wire.Heartbeat, wire.encode(beat)) == beat  # what the hub reads back
        inventory = agent.read_inventory()
        assert agent._spec(inventory)["running_task_ids"] == ["t-1", "t-2"]
        async with HubClient(hub.url, timeout_s=10) as client:
            await agent.register(client)  # the hub takes a registration that lists them
        assert agent.session_token
