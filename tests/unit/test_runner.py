"""A task as a real child process: order, timeouts and stops that reach the whole group, usage."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path

import psutil
import pytest

from gpupool.node.runner import OutputChunk, OutputLog, TaskRunner, TaskSpec, Usage, _utf8_boundary

PY = sys.executable


def spec(code: str, *, timeout: float = 20.0, gpus: list[int] | None = None, **env: str) -> TaskSpec:
    return TaskSpec("t" + str(abs(hash(code)) % 10**8), [PY, "-c", code], env, gpus or [], timeout)


async def run(s: TaskSpec, root: Path, stop: asyncio.Event | None = None) -> tuple[list[OutputChunk], object]:
    chunks: list[OutputChunk] = []

    async def collect(chunk: OutputChunk) -> None:
        chunks.append(chunk)

    outcome = await TaskRunner(s, root).run(collect, stop)
    return chunks, outcome


async def test_stdout_and_stderr_share_one_ordered_sequence(tmp_path: Path) -> None:
    code = (
        "import sys\nfor i in range(50):\n"
        "  out = sys.stdout if i % 2 else sys.stderr\n  out.write(f'{i}\\n'); out.flush()"
    )
    chunks, outcome = await run(spec(code), tmp_path)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    lines = [int(x) for c in chunks for x in c.data.split()]
    assert sorted(lines) == list(range(50)) and outcome.status == "succeeded" and outcome.exit_code == 0  # type: ignore[attr-defined]
    assert {c.stream for c in chunks} == {"stdout", "stderr"}


async def test_big_output_arrives_whole_and_multibyte_text_intact(tmp_path: Path) -> None:
    code = "import sys\nsys.stdout.write('é€😀' * 400000)"
    chunks, _ = await run(spec(code), tmp_path)
    text = "".join(c.data for c in chunks)
    assert text == "é€😀" * 400000 and len(chunks) > 10


def test_utf8_boundary() -> None:
    euro = "€".encode()
    assert _utf8_boundary(b"ab" + euro) == 5
    assert _utf8_boundary(b"ab" + euro[:2]) == 2
    assert _utf8_boundary(b"ab" + euro[:1]) == 2


async def test_failure_env_and_gpu_visibility(tmp_path: Path) -> None:
    code = (
        "import os,sys; e = os.environ\n"
        "print(e['GREETING'], e['CUDA_VISIBLE_DEVICES'], e['GPUPOOL_TASK_ID']); sys.exit(3)"
    )
    s = spec(code, gpus=[0, 2], GREETING="hi")
    chunks, outcome = await run(s, tmp_path)
    assert "".join(c.data for c in chunks).split() == ["hi", "0,2", s.task_id]
    assert outcome.status == "failed" and outcome.exit_code == 3  # type: ignore[attr-defined]
    assert outcome.usage.gpu_seconds == pytest.approx(2 * outcome.usage.duration_sec)  # type: ignore[attr-defined]


def _grandchild_code(pidfile: Path) -> str:
    return (
        "import subprocess,sys,time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    _, outcome = await run(spec(_grandchild_code(pidfile), timeout=2.0), tmp_path)
    assert outcome.status == "expired" and time.monotonic() - started < 15  # type: ignore[attr-defined]
    grandchild = int(pidfile.read_text())
    await asyncio.sleep(0.2)
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


async def test_stop_kills_the_group_and_reports_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    stop = asyncio.Event()
    task = asyncio.create_task(run(spec(_grandchild_code(pidfile)), tmp_path, stop))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text():
            break
        await asyncio.sleep(0.05)
    stop.set()
    _, outcome = await task
    assert outcome.status == "stopped"  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    grandchild = int(pidfile.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


async def test_artifacts_with_digests_and_no_symlinks(tmp_path: Path) -> None:
    code = (
        "import os\nos.makedirs('output/sub', exist_ok=True)\n"
        "open('output/a.txt','w').write('hello')\nopen('output/sub/b.bin','wb').write(b'\\x00'*1000)\n"
        "os.symlink('/etc/passwd', 'output/leak')\n"
    )
    _, outcome = await run(spec(code), tmp_path)
    arts = {a.path: a for a in outcome.artifacts}  # type: ignore[attr-defined]
    assert set(arts) == {"a.txt", "sub/b.bin"}
    assert arts["a.txt"].sha256 == hashlib.sha256(b"hello").hexdigest() and arts["sub/b.bin"].size == 1000


async def test_usage_counts_cpu_and_memory(tmp_path: Path) -> None:
    # Spin until the task itself has burnt 1.5 s of CPU: on a loaded machine a wall-clock loop may get
    # less than that, and the assertion is about what the runner counts, not about the scheduler.
    code = "import time\nx = bytearray(120 * 2**20)\nwhile time.process_time() < 1.5: pass"
    _, outcome = await run(spec(code), tmp_path)
    usage = outcome.usage.to_report()  # type: ignore[attr-defined]
    assert usage["cpu_seconds"] >= 1.0 and usage["ram_peak_mb"] >= 100
    assert usage["gpu_seconds"] == 0 and usage["duration_sec"] >= 1.5


async def test_a_task_that_exits_at_once_succeeds(tmp_path: Path) -> None:
    # The process can exit and be reaped before the usage sampler first looks at it; that race once
    # turned a clean exit into a failed task (UnboundLocalError in the sampler). It lost ~1 run in 5.
    for i in range(40):
        s = TaskSpec(f"quick{i}", ["/bin/true"], {}, [], 10)
        outcome = await TaskRunner(s, tmp_path).run(_ignore)
        assert (outcome.status, outcome.exit_code) == ("succeeded", 0)


async def test_sampling_a_process_already_reaped_measures_nothing(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec("/bin/true")
    await proc.wait()  # reaped: the pid names nothing now
    usage = Usage()
    await asyncio.wait_for(TaskRunner(spec("pass"), tmp_path)._sample(proc.pid, usage), 5)
    assert usage.cpu_seconds == 0 and usage.ram_peak_mb == 0


async def _ignore(chunk: OutputChunk) -> None:
    return None


async def test_missing_program_fails_with_a_message(tmp_path: Path) -> None:
    chunks: list[OutputChunk] = []

    async def collect(chunk: OutputChunk) -> None:
        chunks.append(chunk)

    s = TaskSpec("nope", ["/no/such/program"], {}, [], 5)
    outcome = await TaskRunner(s, tmp_path).run(collect)
    assert outcome.status == "failed" and outcome.exit_code == 127 and "cannot start" in chunks[0].data


def test_output_log_resends_only_what_was_not_acknowledged() -> None:
    log = OutputLog()
    for seq in range(5):
        log.add(OutputChunk(seq, "stdout", str(seq), 0.0))
    log.ack(3)
    log.ack(0)
    log.ack(3)  # a duplicate ack is harmless
    assert [c.seq for c in log.pending()] == [1, 2, 4]


async def test_the_agents_environment_does_not_leak_into_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_API_KEY", "gpk_secret")
    code = "import os; print(sorted(k for k in os.environ if k not in ('PWD', 'SHLVL', '_', 'LC_CTYPE')))"
    chunks, _ = await run(spec(code, MINE="1"), tmp_path)
    seen = "".join(c.data for c in chunks)
    assert "OWNER_API_KEY" not in seen and "MINE" in seen and "PATH" in seen
