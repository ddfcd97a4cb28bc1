"""A task never outlives its node: killed with its process group on stop, and with the agent on a crash."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

AGENT = """
import asyncio, sys
from pathlib import Path
from gpupool.node.runner import TaskRunner, TaskSpec

TASK = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(600)"

async def main():
    command = [sys.executable, "-c", TASK]
    spec = TaskSpec(task_id="t1", command=command, env={}, gpu_indices=[], timeout_sec=600)
    async def out(chunk):
        pass
    await TaskRunner(spec, Path(sys.argv[1])).run(out)

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_task_dies_with_a_crashed_agent(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(tmp_path)])
    pid_file = tmp_path / "t1" / "pid"
    task_pid = 0
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        task_pid = int(pid_file.read_text())
        assert os.getpgid(task_pid) == task_pid  # its own process group, as stop and timeout kill it
        agent.kill()  # a crash: no shutdown code runs in the agent
        agent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(task_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(task_pid), "the task outlived its agent"
    finally:
        agent.kill()
        agent.wait(10)
        if task_pid and not _gone(task_pid):
            os.killpg(task_pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # an orphan comes back to the suite: reap it
            if task_pid:
                os.waitpid(task_pid, os.WNOHANG)


async def test_a_task_gone_before_the_first_sample_keeps_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampler found no process to watch and failed the run (exit None) instead of reporting 3."""
    from gpupool.node.runner import TaskRunner, TaskSpec

    def gone(pid: int) -> psutil.Process:
        raise psutil.NoSuchProcess(pid)

    monkeypatch.setattr(psutil, "Process", gone)  # the race made certain: gone before the first look
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    spec = TaskSpec(task_id="t1", command=command, env={}, gpu_indices=[], timeout_sec=60)

    async def no_output(_chunk: object) -> None:
        return None

    outcome = await TaskRunner(spec, tmp_path).run(no_output)
    assert outcome.exit_code == 3 and outcome.status == "failed"
