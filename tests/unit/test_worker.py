"""The node's task worker on shutdown: what it runs is stopped, and nothing new starts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gpupool import crypto, wire
from gpupool.node.hub_client import HubClient
from gpupool.node.worker import TaskWorker
from tests.conftest import free_port


class Session:
    """The agent as the worker sees it, with no hub socket: results fall back to HTTP."""

    key = crypto.KeyPair.generate()
    nvml = None

    async def report(self, task_id: str, signed: dict[str, object]) -> int | None:
        return None


def assign(task_id: str, code: str) -> wire.Assign:
    task = wire.TaskAssignment(task_id=task_id, command=[sys.executable, "-c", code], timeout_sec=60)
    return wire.Assign(task=task)


async def test_an_assignment_that_arrives_while_stopping_is_not_started(tmp_path: Path) -> None:
    # No hub listens: the stopped task's report fails fast and gives up at its deadline.
    async with HubClient(f"http://127.0.0.1:{free_port()}", backoff_max_s=0.1) as hub:
        worker = TaskWorker(Session(), hub, tmp_path)
        worker.on_command(assign("long", "import time; time.sleep(60)"))
        assert set(worker.running) == {"long"}
        await asyncio.sleep(0.3)  # let it start
        stopping = asyncio.create_task(worker.stop_all())
        await asyncio.sleep(0)
        worker.on_command(assign("late", "print('must not run')"))
        assert "late" not in worker.running
        for job, _stop in list(worker.running.values()):
            job.cancel()  # the report would retry for minutes against no hub
        await stopping
        assert not (tmp_path / "late").exists() and worker.running == {}
