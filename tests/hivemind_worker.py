"""A HiveMind worker, played by the tests as a real process, doing what HiveMind's worker does.

What it follows (him6794/hivemind at f5428f6, ``worker/src/hivemind_worker/``): log in as a user
(``UserService.Login``); ``RegisterWorkerNode`` with ``authorization: Bearer <token>``, its own IP as
``hostname`` and its gRPC port; the same request again without a token every refresh period (HiveMind:
30 s) as its heartbeat; serve ``WorkerNodeService`` on its own port: ``ExecuteTask`` checks the zip and
runs it in a thread (unzip, ``bash run.sh``), each output line goes up with ``TaskOutputUpload``, the
usage with ``TaskUsage``, and at the end the workspace, with an ``execution_log.txt`` saying
``Status: Success|Failed|Stopped by user``, goes up as ``TaskResultUpload`` — each with the user's token
in the field and as a bearer header. ``StopTaskExecution`` kills the task's process.

Every call the hub makes on it is appended to ``calls.log`` in its working directory, so a test can see
that the hub called it.

    python -m tests.hivemind_worker --master 127.0.0.1:50051 --port 50052 --username bob --password …
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc


class Worker(pb_grpc.WorkerNodeServiceServicer):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.channel = grpc.insecure_channel(args.master)
        self.users = pb_grpc.UserServiceStub(self.channel)
        self.nodes = pb_grpc.NodeManagerServiceStub(self.channel)
        self.uploads = pb_grpc.WorkerNodeServiceStub(self.channel)
        self.token = ""
        self.running: dict[str, subprocess.Popen[str]] = {}
        self.stopped: set[str] = set()
        self.lock = threading.Lock()
        self.calls = Path("calls.log")

    def _note(self, line: str) -> None:
        with self.lock, self.calls.open("a") as out:
            out.write(line + "\n")

    def _auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def _request(self) -> pb.RegisterWorkerNodeRequest:
        return pb.RegisterWorkerNodeRequest(
            node_id=self.args.username,
            hostname=self.args.hostname,
            cpu_cores=4,
            memory_gb=8,
            cpu_score=100,
            gpu_score=0,
            gpu_name="Not Available",
            gpu_memory_gb=0,
            location=self.args.location,
            port=self.args.port,
            docker_status="unavailable",
        )

    def login_and_register(self) -> None:
        login = self.users.Login(pb.LoginRequest(username=self.args.username, password=self.args.password))
        self.token = login.token
        answer = self.nodes.RegisterWorkerNode(self._request(), metadata=self._auth(), timeout=15)
        if not answer.success:
            raise SystemExit(f"Registration Failed: {answer.message}")
        print(f"registered: {answer.message}", flush=True)

    def refresh_forever(self) -> None:
        """HiveMind's ``_refresh_registration``: the same request, no token."""
        while True:
            time.sleep(self.args.refresh_sec)
            try:
                self.nodes.RegisterWorkerNode(self._request(), timeout=5)
            except grpc.RpcError as exc:
                print(f"Heartbeat refresh failed: {exc}", flush=True)

    # -- what the hub calls ----------------------------------------------------------------------------
    def ExecuteTask(self, request: pb.ExecuteTaskRequest, context: Any) -> pb.ExecuteTaskResponse:
        self._note(f"ExecuteTask {request.task_id} memory_gb={request.memory_gb}")
        if not request.task_zip:
            return pb.ExecuteTaskResponse(success=False, message="Task data is empty")
        try:
            with zipfile.ZipFile(io.BytesIO(request.task_zip)) as archive:
                archive.testzip()
        except zipfile.BadZipFile as exc:
            return pb.ExecuteTaskResponse(success=False, message=f"Invalid ZIP file: {exc}")
        thread = threading.Thread(target=self._execute, args=(request.task_id, request.task_zip), daemon=True)
        thread.start()
        return pb.ExecuteTaskResponse(success=True, message=f"task {request.task_id} accepted")

    def StopTaskExecution(
        self, request: pb.StopTaskExecutionRequest, context: Any
    ) -> pb.StopTaskExecutionResponse:
        self._note(f"StopTaskExecution {request.task_id}")
        with self.lock:
            process = self.running.get(request.task_id)
            if process is None:
                return pb.StopTaskExecutionResponse(
                    success=False, message=f"Task {request.task_id} not running"
                )
            self.stopped.add(request.task_id)
        os.killpg(process.pid, signal.SIGKILL)
        return pb.StopTaskExecutionResponse(
            success=True, message=f"Stop signal sent to task {request.task_id}"
        )

    # -- running a task --------------------------------------------------------------------------------
    def _execute(self, task_id: str, task_zip: bytes) -> None:
        workspace = Path(tempfile.mkdtemp(prefix=f"task-{task_id}-", dir="."))
        with zipfile.ZipFile(io.BytesIO(task_zip)) as archive:
            archive.extractall(workspace)
        process = subprocess.Popen(
            ["bash", "run.sh"],
            cwd=workspace,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        with self.lock:
            self.running[task_id] = process
        assert process.stdout is not None
        for line in iter(process.stdout.readline, ""):
            if line.strip():
                self._upload(
                    "TaskOutputUpload",
                    pb.TaskOutputUploadRequest(task_id=task_id, output=line.strip(), token=self.token),
                )
                self._upload(
                    "TaskUsage",
                    pb.TaskUsageRequest(
                        task_id=task_id,
                        cpu_usage=100,
                        memory_usage=99_999,
                        gpu_usage=100,
                        gpu_memory_usage=99_999,
                        token=self.token,
                    ),
                )
        code = process.wait()
        with self.lock:
            self.running.pop(task_id, None)
            stopped = task_id in self.stopped
        status = "Stopped by user" if stopped else ("Success" if code == 0 else "Failed")
        (workspace / "execution_log.txt").write_text(f"Task ID: {task_id}\nStatus: {status}\n")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(workspace.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(workspace).as_posix())
        self._upload(
            "TaskResultUpload",
            pb.TaskResultUploadRequest(task_id=task_id, result_zip=out.getvalue(), token=self.token),
        )

    def _upload(self, method: str, request: Any) -> None:
        try:
            answer = getattr(self.uploads, method)(request, metadata=self._auth(), timeout=10)
            self._note(f"{method} {request.task_id} -> {answer.success} {answer.message}")
        except grpc.RpcError as exc:
            self._note(f"{method} {request.task_id} -> error {exc.code().name} {exc.details()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--master", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hostname", default="127.0.0.1")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--location", default="Unknown")
    parser.add_argument("--refresh-sec", type=float, default=30.0)
    args = parser.parse_args()
    worker = Worker(args)
    server = grpc.server(ThreadPoolExecutor(max_workers=10))
    pb_grpc.add_WorkerNodeServiceServicer_to_server(worker, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    worker.login_and_register()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    threading.Thread(target=worker.refresh_forever, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
