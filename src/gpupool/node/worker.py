"""Tasks on the node: run what the hub assigns, stream its output, report a signed result (SPEC §3.4).

Output goes to the hub in sequence order; a chunk the hub has not acknowledged stays in the task's
``OutputLog`` and is sent again (the hub stores each seq once), so a reconnect loses and repeats
nothing. The result is signed with the node's key (kind 21002) and re-sent until the hub answers: the
hub settles a task once, whatever arrives twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from gpupool import crypto, wire
from gpupool.bundles import BundleLimits, extract_bundle
from gpupool.errors import GpupoolError
from gpupool.node import runner
from gpupool.node.gpu import NvmlModule
from gpupool.node.hub_client import Backoff, HubClient

log = logging.getLogger("gpupool.node.tasks")
RESULT_RETRY_S = 120.0


class Session(Protocol):
    """What the worker needs from the agent: the current session and the node's key."""

    key: crypto.KeyPair
    nvml: NvmlModule | None

    async def report(self, task_id: str, signed: dict[str, Any]) -> int | None:
        """Deliver a signed result on the heartbeat socket; None when it could not."""


class TaskWorker:
    def __init__(
        self, session: Session, hub: HubClient, work_dir: Path, limits: BundleLimits | None = None
    ) -> None:
        self.session = session
        self.hub = hub
        self.work_dir = work_dir
        self.limits = limits or BundleLimits()
        self.running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self.closing = False

    @property
    def queue_len(self) -> int:
        return len(self.running)

    def on_command(self, message: wire.Assign | wire.Stop) -> None:
        if isinstance(message, wire.Assign):
            task = message.task
            task_id = task.task_id
            if task_id in self.running:
                return  # the same assignment pushed twice: it is already running
            if self.closing:  # stopping: never start what would outlive the agent; the hub re-queues it
                log.info("task %s not started: this node is stopping", task_id)
                return
            stop = asyncio.Event()
            job = asyncio.create_task(self._run(task, stop), name=f"task:{task_id}")
            self.running[task_id] = (job, stop)
            job.add_done_callback(lambda _t: self.running.pop(task_id, None))
        else:
            entry = self.running.get(message.task_id)
            if entry is not None:
                entry[1].set()

    async def stop_all(self) -> None:
        """On shutdown: stop every task; each still reports what ran, so the user pays only for that.
        From here on no assignment is started (one could come while the results go out)."""
        self.closing = True
        for _job, stop in list(self.running.values()):
            stop.set()
        jobs = [job for job, _stop in self.running.values()]
        if jobs:
            await asyncio.wait(jobs, timeout=30)

    async def _run(self, task: wire.TaskAssignment, stop: asyncio.Event) -> None:
        task_id = task.task_id
        spec = runner.TaskSpec(
            task_id=task_id,
            command=list(task.command),
            env=dict(task.env),
            gpu_indices=list(task.gpu_indices),
            timeout_sec=task.timeout_sec,
        )
        pending = runner.OutputLog()

        async def on_output(chunk: runner.OutputChunk) -> None:
            pending.add(chunk)
            await self._flush(task_id, pending)

        log.info("task %s started: %s", task_id, spec.command)
        try:
            if task.bundle:
                await self._fetch_bundle(task_id, self.work_dir / task_id)
            outcome = await runner.TaskRunner(spec, self.work_dir, nvml=self.session.nvml).run(
                on_output, stop
            )
        except GpupoolError as exc:  # the bundle was refused (a bomb, an unsafe path): the user reads why
            log.error("task %s refused: %s", task_id, exc)
            await on_output(runner.OutputChunk(0, "stderr", f"gpupool node: {exc}\n", time.time()))
            outcome = runner.TaskOutcome(None, "failed", [], runner.Usage())
        except Exception:  # the node could not even start it: report a failure, not silence
            log.exception("task %s could not run", task_id)
            outcome = runner.TaskOutcome(None, "failed", [], runner.Usage())
        deadline = time.monotonic() + RESULT_RETRY_S
        while pending.pending() and time.monotonic() < deadline:
            await self._flush(task_id, pending)
            if pending.pending():
                await asyncio.sleep(1.0)
        uploaded = await self._upload_artifacts(task_id, outcome)
        await self._report(task_id, outcome, uploaded, deadline)

    async def _flush(self, task_id: str, pending: runner.OutputLog) -> None:
        for chunk in pending.pending():
            body = wire.encode(wire.OutputChunk(seq=chunk.seq, stream=chunk.stream, data=chunk.data))
            try:  # one try: the task's output pipes wait on this; what is left goes with the next flush
                resp = await self.hub.request("POST", f"/v1/tasks/{task_id}/output", json=body, attempts=1)
            except httpx.HTTPError:
                return  # the hub is away: these stay pending and go with the next flush
            if resp.status_code >= 500 or resp.status_code == 401:
                return
            pending.ack(chunk.seq)  # stored, or refused for good (403/404/422): never resend it

    async def _fetch_bundle(self, task_id: str, workdir: Path) -> None:
        """Download the task's files and unpack them; the ``data`` filter refuses paths that escape."""
        workdir.mkdir(parents=True, exist_ok=True)
        archive = workdir.parent / f"{task_id}.bundle.tar.gz"
        resp = await self.hub.request("GET", f"/v1/tasks/{task_id}/bundle", stream=True)
        try:
            resp.raise_for_status()
            with archive.open("wb") as out:
                async for chunk in resp.aiter_bytes():
                    out.write(chunk)
        finally:
            await resp.aclose()

        try:  # as a stream, under the caps: a bomb stops at the cap and leaves nothing behind
            await asyncio.to_thread(extract_bundle, archive, workdir, self.limits)
        finally:
            archive.unlink(missing_ok=True)

    async def _upload_artifacts(self, task_id: str, outcome: runner.TaskOutcome) -> list[runner.Artifact]:
        """PUT every file the task left under ``output/``; only what the hub took is claimed.

        Streamed in 1 MiB pieces read off the event loop: a 20 GB checkpoint costs the agent a buffer,
        not 20 GB of memory, and heartbeats go on while it uploads.
        """
        uploaded = []
        for artifact in outcome.artifacts:
            path = self.work_dir / task_id / "output" / artifact.path
            headers = {"X-Content-SHA256": artifact.sha256, "Content-Length": str(artifact.size)}
            try:
                resp = await self.hub.request(
                    "PUT",
                    f"/v1/tasks/{task_id}/artifacts/{artifact.path}",
                    content=lambda path=path: _pieces(path),  # type: ignore[misc]
                    headers=headers,
                )
            except (OSError, httpx.HTTPError) as exc:
                log.warning("task %s: artifact %s not uploaded: %s", task_id, artifact.path, exc)
                continue
            if resp.status_code == 201:
                uploaded.append(artifact)
            else:
                log.warning("task %s: hub refused artifact %s: %s", task_id, artifact.path, resp.text[:200])
        return uploaded

    async def _report(
        self, task_id: str, outcome: runner.TaskOutcome, artifacts: list[runner.Artifact], deadline: float
    ) -> None:
        result = wire.TaskResult(
            task_id=task_id,
            exit_code=outcome.exit_code if outcome.exit_code is not None else -1,
            status=outcome.status,
            usage=outcome.usage.to_wire(),
            artifacts=artifacts,
        )
        body = wire.encode(result)
        backoff = Backoff(base_s=1.0, max_s=10.0)
        while True:
            signed = crypto.sign_body(
                self.session.key, crypto.KIND_TASK_RESULT, body, created_at=int(time.time())
            )
            # The heartbeat socket first (no request per task), plain HTTP when it is down or silent.
            answer = await self.session.report(task_id, signed)
            if answer is None:
                with contextlib.suppress(httpx.HTTPError):
                    path = f"/v1/tasks/{task_id}/result"
                    answer = (await self.hub.request("POST", path, json=signed, attempts=1)).status_code
            if answer is not None and answer < 500 and answer != 401:
                log.info(
                    "task %s %s (exit %s): hub answered %s",
                    task_id,
                    outcome.status,
                    outcome.exit_code,
                    answer,
                )
                return
            if time.monotonic() > deadline:
                log.error("task %s: the hub did not take the result; giving up", task_id)
                return
            await asyncio.sleep(backoff.next())  # signed afresh each time: the event stays recent


async def _pieces(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while piece := await asyncio.to_thread(handle.read, size):
            yield piece
