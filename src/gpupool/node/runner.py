"""One task as a child process: own working dir and process group, ordered output, timeout, usage.

stdout and stderr share one sequence number so the hub can replay them in the order they were
printed; a timeout or a stop kills the whole process group (SIGTERM, then SIGKILL), so nothing the task
started outlives it. On Linux the task is also killed when the agent itself dies (a crash, a SIGKILL),
so a node that went away leaves no task running on its GPUs. Usage (CPU seconds and RAM peak over the
process tree, GPU seconds as wall time times GPUs given) is sampled while it runs and is what the
node signs in its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from gpupool import wire
from gpupool.node.gpu import NvmlModule, process_usage

CHUNK_BYTES = 16 * 1024
KILL_GRACE_S = 5.0
# CPU time is read from the live process tree; what a process burns after the last sample is lost when
# it exits (it is reaped at once), so the interval bounds the under-count of a task's CPU seconds.
SAMPLE_S = 0.25


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_the_agent(agent_pid: int) -> Callable[[], None] | None:
    """In the child, before exec: SIGKILL when the agent dies (Linux's parent-death signal)."""
    if _LIBC is None:
        return None
    libc = _LIBC

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != agent_pid:  # the agent died between fork and prctl
            os._exit(137)

    return arm


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str
    command: list[str]
    env: dict[str, str]
    gpu_indices: list[int]
    timeout_sec: float


@dataclass(frozen=True, slots=True)
class OutputChunk:
    seq: int
    stream: wire.Stream
    data: str
    ts: float


Artifact = wire.Artifact  # a file the task left under output/, as the node claims it


@dataclass
class Usage:
    gpu_seconds: float = 0.0
    gpu_util_avg: float | None = None
    vram_peak_mb: float | None = None
    cpu_seconds: float = 0.0
    ram_peak_mb: float = 0.0
    duration_sec: float = 0.0
    _util_samples: list[float] = field(default_factory=list)

    def to_wire(self) -> wire.Usage:
        """The figures the node signs in its result."""
        return wire.Usage(
            gpu_seconds=round(self.gpu_seconds, 3),
            gpu_util_avg=self.gpu_util_avg,
            vram_peak_mb=self.vram_peak_mb,
            cpu_seconds=round(self.cpu_seconds, 3),
            ram_peak_mb=round(self.ram_peak_mb, 1),
            duration_sec=round(self.duration_sec, 3),
        )

    def to_report(self) -> dict[str, Any]:
        return wire.encode(self.to_wire())


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    exit_code: int | None
    status: wire.TaskStatus
    artifacts: list[Artifact]
    usage: Usage


class OutputLog:
    """Chunks sent but not yet acknowledged by the hub, in order; resent after a reconnect."""

    def __init__(self) -> None:
        self._chunks: dict[int, OutputChunk] = {}

    def add(self, chunk: OutputChunk) -> None:
        self._chunks[chunk.seq] = chunk

    def ack(self, seq: int) -> None:
        self._chunks.pop(seq, None)

    def pending(self) -> list[OutputChunk]:
        return [self._chunks[s] for s in sorted(self._chunks)]


class TaskRunner:
    def __init__(self, spec: TaskSpec, root: Path, nvml: NvmlModule | None = None) -> None:
        self.spec = spec
        self.workdir = root / spec.task_id
        self.nvml = nvml
        self._seq = 0

    async def run(
        self, on_output: Callable[[OutputChunk], Awaitable[None]], stop: asyncio.Event | None = None
    ) -> TaskOutcome:
        (self.workdir / "output").mkdir(parents=True, exist_ok=True)
        # Only what a program needs from the node: the agent's own environment (keys, tokens) stays out.
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.workdir),
            **self.spec.env,
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in self.spec.gpu_indices),
            "GPUPOOL_TASK_ID": self.spec.task_id,
        }
        started = time.monotonic()
        usage = Usage()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.spec.command,
                cwd=self.workdir,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a kill reaches everything it started
                preexec_fn=_die_with_the_agent(os.getpid()),
            )
        except OSError as exc:
            await self._emit(on_output, "stderr", f"cannot start {self.spec.command[0]!r}: {exc}\n")
            return TaskOutcome(127, "failed", [], usage)
        lock = asyncio.Lock()
        readers = [
            asyncio.create_task(self._pump(proc.stdout, "stdout", on_output, lock)),
            asyncio.create_task(self._pump(proc.stderr, "stderr", on_output, lock)),
        ]
        sampler = asyncio.create_task(self._sample(proc.pid, usage))
        try:
            status = await self._wait(proc, stop)
            await asyncio.gather(*readers)
        except asyncio.CancelledError:
            # The agent is going away without waiting for the task: it must not outlive the agent.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for helper in (*readers, sampler):
                helper.cancel()
            raise
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        usage.duration_sec = time.monotonic() - started
        usage.gpu_seconds = usage.duration_sec * len(self.spec.gpu_indices)
        if usage._util_samples:
            usage.gpu_util_avg = round(sum(usage._util_samples) / len(usage._util_samples), 1)
        code = proc.returncode
        ended: wire.TaskStatus = ("succeeded" if code == 0 else "failed") if status is None else status
        return TaskOutcome(code, ended, self._artifacts(), usage)

    async def _wait(
        self, proc: asyncio.subprocess.Process, stop: asyncio.Event | None
    ) -> Literal["stopped", "expired"] | None:
        """How the task ended when the node ended it; None when it exited by itself."""
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        done, _ = await asyncio.wait(
            [t for t in (waiter, stopper) if t is not None],
            timeout=self.spec.timeout_sec,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if stopper is not None:
            stopper.cancel()
        if waiter in done:
            return None
        await self._kill_group(proc, waiter)
        return "stopped" if stopper is not None and stopper in done else "expired"

    async def _kill_group(self, proc: asyncio.subprocess.Process, waiter: asyncio.Task[int]) -> None:
        for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), grace)
                break
            except TimeoutError:
                continue
        await waiter
        with contextlib.suppress(ProcessLookupError):  # stragglers that left the leader's wait
            os.killpg(proc.pid, signal.SIGKILL)

    async def _pump(
        self,
        stream: asyncio.StreamReader | None,
        name: wire.Stream,
        on_output: Callable[[OutputChunk], Awaitable[None]],
        lock: asyncio.Lock,
    ) -> None:
        assert stream is not None
        pending = b""
        while True:
            block = await stream.read(CHUNK_BYTES)
            if not block:
                break
            data = pending + block
            cut = _utf8_boundary(data)  # never split a multibyte character across chunks
            pending = data[cut:]
            if cut:
                async with lock:
                    await self._emit(on_output, name, data[:cut].decode("utf-8", errors="replace"))
        if pending:
            async with lock:
                await self._emit(on_output, name, pending.decode("utf-8", errors="replace"))

    async def _emit(
        self, on_output: Callable[[OutputChunk], Awaitable[None]], stream: wire.Stream, text: str
    ) -> None:
        chunk = OutputChunk(self._seq, stream, text, time.time())
        self._seq += 1
        await on_output(chunk)

    async def _sample(self, pid: int, usage: Usage) -> None:
        try:
            leader = psutil.Process(pid)
        except psutil.Error:
            return  # it exited and was reaped before the first sample: there is nothing to measure
        cpu_by_pid: dict[int, float] = {}
        while True:
            procs = []
            with contextlib.suppress(psutil.Error):
                procs = [leader, *leader.children(recursive=True)]
            rss = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    cpu_by_pid[p.pid] = times.user + times.system
                    rss += p.memory_info().rss
            usage.cpu_seconds = sum(cpu_by_pid.values())
            usage.ram_peak_mb = max(usage.ram_peak_mb, rss / 2**20)
            if self.nvml is not None and self.spec.gpu_indices:
                self._sample_gpu([p.pid for p in procs], usage)
            await asyncio.sleep(SAMPLE_S)

    def _sample_gpu(self, pids: list[int], usage: Usage) -> None:
        with contextlib.suppress(Exception):
            for util, vram in process_usage(self.nvml, pids).values():
                if util is not None:
                    usage._util_samples.append(float(util))
                if vram is not None:
                    usage.vram_peak_mb = max(usage.vram_peak_mb or 0.0, float(vram))

    def _artifacts(self) -> list[Artifact]:
        out = self.workdir / "output"
        found = []
        for path in sorted(out.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue  # a link could point anywhere on the node: never follow it
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            rel, size = path.relative_to(out).as_posix(), path.stat().st_size
            found.append(Artifact(path=rel, size=size, sha256=digest.hexdigest()))
        return found


def _utf8_boundary(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): is its character complete?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) if need <= back else len(data) - back
    return len(data)
