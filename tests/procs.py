"""Real processes for end-to-end tests: a hub on a free port, started, killed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from tests.conftest import ADMIN_PASSWORD, free_port


def kill_tree(processes: list[psutil.Process]) -> None:
    """SIGKILL each process and the process group it leads (a task runs in its own), then reap."""
    for proc in processes:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    psutil.wait_procs(processes, timeout=5)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


class ChildProcess:
    """A gpupool process under test: killed like a crash, or stopped by a signal like a supervisor."""

    proc: subprocess.Popen[bytes] | None = None

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, health: str, timeout_s: float
    ) -> None:
        """Start ``gpupool ARGV…`` logging to ``log_path``; return once ``health`` answers 200."""
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool", *argv], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{argv[0]} exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{argv[0]} did not answer within {timeout_s}s: {log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash; what it started is killed too (its tasks
        run in process groups of their own, which a crash of their parent does not reach)."""
        assert self.proc is not None
        started = descendants(self.proc.pid)
        self.proc.kill()
        self.proc.wait(10)
        kill_tree(started)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            started = descendants(self.proc.pid)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
            finally:
                kill_tree([p for p in started if p.is_running()])
        return int(self.proc.returncode)


class HubProcess(ChildProcess):
    """``gpupool hub`` as a child process over a given database; its output goes to a log file."""

    def __init__(self, db_url: str, workdir: Path, port: int | None = None, **env: str) -> None:
        self.db_url = db_url
        self.workdir = workdir
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        env = {
            **os.environ,
            "GPUPOOL_DB_URL": self.db_url,
            "GPUPOOL_HUB_DATA_DIR": str(self.workdir / "hub-data"),
            "GPUPOOL_STORAGE_PATH": str(self.workdir / "artifacts"),
            "GPUPOOL_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "GPUPOOL_HUB_JWT_SECRET": "e2e-jwt-secret-0123456789abcdef0123456789",
            "GPUPOOL_HUB_ARGON2_TIME_COST": "1",
            "GPUPOOL_HUB_ARGON2_MEMORY_KIB": "64",
            "GPUPOOL_HUB_LOG_LEVEL": "warning",
            "GPUPOOL_HUB_GRPC_PORT": str(self.grpc_port),  # hubs side by side must not meet on 50051
            **self.extra_env,
        }
        argv = ["hub", "--host", "127.0.0.1", "--port", str(self.port)]
        self.spawn(argv, env, self.workdir, self.log_path, f"{self.url}/v1/health", timeout_s)


FIXTURES_GPU = Path(__file__).parent / "fixtures" / "gpu"


class NodeProcess(ChildProcess):
    """``gpupool node`` as a child process, replaying the loaded H100 readings instead of a real GPU."""

    def __init__(self, registry_url: str | None, workdir: Path, owner: str | None, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("REGISTRY_URL", "OWNER_ADDRESS")},
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "DATA_DIR": str(workdir / "node-data"),
            "GPUPOOL_NODE_FAKE_NVML": str(FIXTURES_GPU / "h100-loaded"),
            "GPUPOOL_NODE_BACKOFF_MAX_SEC": "1",
            **({"REGISTRY_URL": registry_url} if registry_url else {}),
            **({"OWNER_ADDRESS": owner} if owner else {}),
            **env,
        }
        self.log_path = workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool", "node"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def run_to_exit(self, timeout_s: float = 30.0) -> tuple[int, str]:
        """Start, wait for the process to end by itself; (exit code, everything it printed)."""
        self.start()
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        return code, self.log_path.read_text()

    def wait_healthy(self, timeout_s: float = 30.0) -> dict[str, object]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                resp = httpx.get(f"{self.url}/health", timeout=1)
                body: dict[str, object] = resp.json()
                return body
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"node /health did not answer: {self.log_path.read_text()[-2000:]}")


@contextmanager
def running_hub(workdir: Path, **env: str) -> Iterator[HubProcess]:
    """A hub process on a fresh SQLite file in ``workdir``, stopped (SIGTERM) afterwards."""
    proc = HubProcess(f"sqlite:///{workdir}/hub.db", workdir, **env)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class DelegateProcess(ChildProcess):
    """``gpupool delegate serve`` (the big node) in its own working directory, on the CPU."""

    def __init__(self, workdir: Path, token: str, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DELEGATION_")},
            "DELEGATION_AUTH_TOKEN": token,
            "DELEGATION_HOST": "127.0.0.1",
            "DELEGATION_PORT": str(self.port),
            "DELEGATION_DEVICE": "cpu",
            **env,
        }
        self.log_path = workdir / "delegate.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        health = f"{self.url}/api/v1/delegation/status"
        self.spawn(["delegate", "serve"], self.env, self.workdir, self.log_path, health, timeout_s)
