"""HiveMind's master and worker against a real hub process: a worker process that speaks HiveMind's
``WorkerNodeService`` (``tests/hivemind_worker.py``) and a client that speaks ``MasterNodeService``.

The worker's user is paid from the hub's clock (assignment to result), never from what the worker
reports, once per task whatever dies or is stopped on the way; the books balance after each story.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest

from gpupool.core.scheduling import charge_for_usage
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from gpupool.rpc.services import hub_task_id
from tests.conftest import ADMIN_PASSWORD, free_port
from tests.procs import HubProcess

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent.parent / "hivemind_worker.py"
PRICE = 1_000_000  # the hub's default for HiveMind uploads and workers: 1 token per 1000 s
START = 50_000_000


def zipped(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


class WorkerProcess:
    """The HiveMind-like worker, its output and its ``calls.log`` in a folder of its own."""

    def __init__(self, hub: HubProcess, workdir: Path, username: str = "bob") -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir()
        argv = [
            sys.executable, str(WORKER), "--master", f"127.0.0.1:{hub.grpc_port}", "--port", str(self.port),
            "--username", username, "--password", f"{username}-password", "--refresh-sec", "0.5",
        ]  # fmt: skip
        self.log = (workdir / "worker.log").open("ab")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)

    def calls(self) -> str:
        path = self.workdir / "calls.log"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """The worker dies with everything it runs, as a machine that loses power."""
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.proc.wait(10)
        self.log.close()


class Pool:
    def __init__(self, hub: HubProcess, tmp_path: Path) -> None:
        self.hub, self.tmp_path = hub, tmp_path
        self.admin = self.login("admin", ADMIN_PASSWORD)
        self.workers: list[WorkerProcess] = []
        self.channel = grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}")
        self.users = pb_grpc.UserServiceStub(self.channel)
        self.master = pb_grpc.MasterNodeServiceStub(self.channel)

    def login(self, username: str, password: str) -> dict[str, str]:
        answer = httpx.post(
            f"{self.hub.url}/v1/auth/login", json={"username": username, "password": password}
        )
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def add_user(self, username: str, balance: int) -> None:
        body = {"username": username, "password": f"{username}-password", "role": "user"}
        assert httpx.post(f"{self.hub.url}/v1/users", json=body, headers=self.admin).status_code == 201
        if balance:
            mint = {"to": username, "amount": balance, "idempotency_key": f"mint-{username}"}
            assert httpx.post(f"{self.hub.url}/v1/admin/mint", json=mint, headers=self.admin).is_success

    def token(self, username: str) -> str:
        return str(
            self.users.Login(pb.LoginRequest(username=username, password=f"{username}-password")).token
        )

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.hub, self.tmp_path / f"worker-{len(self.workers)}")
        self.workers.append(worker)
        wait_for(lambda: self.online() == 1, f"the worker to register: {worker.workdir}")
        return worker

    def online(self) -> int:
        return int(httpx.get(f"{self.hub.url}/v1/health").json()["online_miners"])

    def account(self, name: str) -> tuple[int, int]:
        found = httpx.get(f"{self.hub.url}/v1/admin/accounts/{name}", headers=self.admin).json()
        return found["available"], found["held"]

    def books_balance(self) -> bool:
        answer = httpx.get(f"{self.hub.url}/v1/admin/ledger/trial-balance", headers=self.admin)
        return bool(answer.json()["balanced"])

    def task(self, token: str, client_id: str) -> pb.TaskInfo:
        listed = self.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=token))
        (found,) = [t for t in listed.tasks if t.task_id == client_id]
        return found

    def task_json(self, user: str, client_id: str) -> dict[str, Any]:
        headers = self.login(user, f"{user}-password")
        answer = httpx.get(f"{self.hub.url}/v1/tasks/{hub_task_id(user, client_id)}", headers=headers)
        return dict(answer.json())

    def log(self, token: str, client_id: str) -> str:
        return str(self.master.GetTasklog(pb.TasklogRequest(task_id=client_id, token=token)).log)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, HEARTBEAT_GRACE_SEC="3")
    hub.start()
    pool = Pool(hub, tmp_path)
    try:
        pool.add_user("alice", START)
        pool.add_user("bob", 0)
        yield pool
    finally:
        pool.channel.close()
        for worker in pool.workers:
            if worker.proc.poll() is None:
                worker.kill()
        hub.stop()


def upload(pool: Pool, token: str, client_id: str, run_sh: str) -> pb.UploadTaskResponse:
    answer = pool.master.UploadTask(
        pb.UploadTaskRequest(
            task_id=client_id,
            task_zip=zipped({"run.sh": run_sh, "data/in.txt": "21\n"}),
            memory_gb=2,
            cpu_score=100,
            gpu_score=0,
            gpu_memory_gb=0,
            location="Any",  # HiveMind's upload form's default
            gpu_name="",
            token=token,
        )
    )
    assert answer.success and answer.status == "PENDING", answer
    return answer


def assert_paid_once_from_the_hubs_clock(pool: Pool, client_id: str) -> int:
    """The owner paid exactly what the hub's clock measured, the worker's user got it, nothing held."""
    task = pool.task_json("alice", client_id)
    cost, usage = task["cost"], task["usage"]
    assert usage["measured_by"] == "hub" and usage["gpu_seconds"] == usage["duration_sec"] > 0
    assert cost == charge_for_usage(PRICE, usage["gpu_seconds"]) > 0  # never from what the worker says
    assert pool.account("user:alice") == (START - cost, 0)
    assert pool.account("user:bob") == (cost, 0)
    assert pool.books_balance()
    return int(cost)


def test_a_hivemind_worker_runs_a_hivemind_upload_and_its_user_is_paid_once(pool: Pool) -> None:
    worker = pool.start_worker()
    alice = pool.token("alice")
    upload(pool, alice, "job-1", "echo reading\nexpr $(cat data/in.txt) \\* 2 > answer.txt\necho done\n")

    wait_for(lambda: pool.task(alice, "job-1").status == "COMPLETED", "job-1 to complete")
    info = pool.task(alice, "job-1")
    assert (info.worker_ip, info.message, info.state) == ("127.0.0.1", "succeeded", "succeeded")
    assert pool.log(alice, "job-1") == "reading\ndone\n"
    result = pool.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job-1", token=alice))
    assert (result.success, result.status, result.exit_code) == (True, "COMPLETED", 0)
    with zipfile.ZipFile(io.BytesIO(result.result_zip)) as archive:  # the worker's own zip, as it sent it
        assert archive.read("answer.txt") == b"42\n"
        assert b"Status: Success" in archive.read("execution_log.txt")

    hub_id = hub_task_id("alice", "job-1")
    assert f"ExecuteTask {hub_id} memory_gb=2" in worker.calls()
    cost = assert_paid_once_from_the_hubs_clock(pool, "job-1")
    assert info.cost_micro == cost
    # What the worker said it used is kept, shown only: it billed nothing.
    assert pool.task_json("alice", "job-1")["usage"]["reported"]["memory_usage"] == 99_999
    balance = pool.users.GetBalance(pb.GetBalanceRequest(username="alice", token=alice))
    assert (balance.balance, balance.balance_micro) == ((START - cost) // 1_000_000, START - cost)


def test_a_worker_that_dies_mid_task_loses_it_to_the_next_and_the_task_is_paid_once(
    pool: Pool, tmp_path: Path
) -> None:
    first = pool.start_worker()
    alice = pool.token("alice")
    marker = tmp_path / "first-attempt"
    upload(
        pool, alice, "job-2",
        f"if [ ! -e {marker} ]; then touch {marker}; echo first; sleep 60; fi\necho finished\n",
    )  # fmt: skip
    wait_for(lambda: pool.log(alice, "job-2") == "first\n", "the first attempt to run")
    assert pool.task(alice, "job-2").status == "RUNNING"

    first.kill()  # no more refreshes: offline after the grace period, the task back in the queue
    wait_for(lambda: pool.task(alice, "job-2").status == "PENDING", "the task to be re-queued")
    assert pool.online() == 0 and pool.account("user:bob") == (0, 0)

    pool.start_worker()
    wait_for(lambda: pool.task(alice, "job-2").status == "COMPLETED", "the second attempt to complete")
    assert pool.task_json("alice", "job-2")["attempts"] == 2
    assert pool.log(alice, "job-2") == "first\nfinished\n"
    assert_paid_once_from_the_hubs_clock(pool, "job-2")


def test_stop_mid_run_calls_the_workers_stop_and_settles_once(pool: Pool) -> None:
    worker = pool.start_worker()
    alice = pool.token("alice")
    upload(pool, alice, "job-3", "echo started\nsleep 60\necho never\n")
    wait_for(lambda: pool.log(alice, "job-3") == "started\n", "job-3 to run")

    stopped = pool.master.StopTask(pb.StopTaskRequest(task_id="job-3", token=alice))
    assert (stopped.success, stopped.status) == (True, "STOPPED")
    hub_id = hub_task_id("alice", "job-3")
    assert f"StopTaskExecution {hub_id}" in worker.calls()
    assert pool.task(alice, "job-3").status == "STOPPED"
    cost = assert_paid_once_from_the_hubs_clock(pool, "job-3")

    # The worker's late result (a zip saying it was stopped) is kept, as HiveMind keeps partial
    # results, and moves no money.
    wait_for(lambda: f"TaskResultUpload {hub_id} -> True" in worker.calls(), "the worker's late result")
    result = pool.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job-3", token=alice))
    assert (result.success, result.status) == (True, "STOPPED")
    with zipfile.ZipFile(io.BytesIO(result.result_zip)) as archive:
        assert b"Status: Stopped by user" in archive.read("execution_log.txt")
    again = pool.master.StopTask(pb.StopTaskRequest(task_id="job-3", token=alice))
    assert again.status == "STOPPED"
    assert pool.account("user:alice") == (START - cost, 0) and pool.account("user:bob") == (cost, 0)
    assert "never" not in pool.log(alice, "job-3")
