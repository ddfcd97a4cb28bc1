"""HiveMind's ``nodepool`` services (seed 001) as thin adapters over the hub's services: the users' and
the master's side here, the workers' side in ``rpc/workers.py``.

Each method reads its request, calls the same service the HTTP route calls and writes the answer in
HiveMind's units and words (``hivemind.py``); ``adapter`` turns a ``GpupoolError`` into the gRPC status
of ``rpc/errors.py``. Authentication is the HTTP API's: a user's JWT access token (request field
``token`` or ``authorization: Bearer``), or a node's session token for a signed node's calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from pydantic import ValidationError

from gpupool.api.schemas_tasks import TaskIn
from gpupool.core.model import Principal, TokenPair
from gpupool.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge, TokenInvalid
from gpupool.hub.container import Hub
from gpupool.hub.files import TaskFiles
from gpupool.hub.tasks import NewTask
from gpupool.rpc import hivemind
from gpupool.rpc.base import RESULT_ARTIFACT, Servicer, adapter, client_host
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from gpupool.rpc.workers import NodeManagerService, WorkerNodeService
from gpupool.store.tasks_repo import TaskRow

# What a zip runs when UploadTask names no command: the first of these found at the zip's top.
DEFAULT_ENTRYPOINTS = (("run.sh", ["sh", "run.sh"]), ("main.py", ["python3", "main.py"]))
CLIENT_TASK_ID_MAX = 128
ALL_TASKS_PAGE = 500  # tasks read per query by GetAllUserTasks


def _renewal(pair: TokenPair) -> dict[str, Any]:
    """What Login and RefreshToken add to HiveMind's answer: the refresh token and the lifetime."""
    return {"refresh_token": pair.refresh_token, "expires_in": pair.expires_in}


# -- users --------------------------------------------------------------------------------------------


class UserService(Servicer, pb_grpc.UserServiceServicer):
    @adapter
    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        pair = await self.hub.auth.login(request.username, request.password, client_host(context))
        return pb.LoginResponse(success=True, message="logged in", token=pair.access_token, **_renewal(pair))

    @adapter
    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        """``amount`` in whole tokens, as HiveMind sends it, or ``amount_micro`` exactly."""
        principal = await self.principal(request.token, context)
        if not request.receiver_username:
            raise InvalidInput("receiver_username is required", field="receiver_username")
        amount_micro = hivemind.micro_of(request.amount, request.amount_micro, "amount")
        key = request.idempotency_key or f"grpc-{uuid.uuid4().hex}"
        result = await self.hub.ledger.transfer(principal, request.receiver_username, amount_micro, key)
        record = result.record
        return pb.TransferResponse(
            success=True,
            message=f"transferred {record.amount_micro / hivemind.MICRO_PER_TOKEN:f} to {record.destination}",
            transfer_id=record.id,
            replayed=result.replayed,
            amount_micro=record.amount_micro,
        )

    @adapter
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        principal = await self.principal(request.token, context)
        account = principal.account
        if request.username and request.username != principal.username:
            if not principal.is_admin:
                raise Forbidden("a token reads its own user's balance only")
            account = self.hub.ledger.resolve_account(request.username)
        balance = await self.hub.ledger.balance(account)
        return pb.GetBalanceResponse(
            success=True,
            message=account,
            balance=hivemind.whole_tokens(balance.available),
            balance_micro=balance.available,
            held_micro=balance.held,
        )

    @adapter
    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshTokenResponse:
        """A refresh token rotates as over HTTP; HiveMind's clients send their access token instead,
        which is exchanged for another access token only, ending no later than the session it came
        from: never for a refresh token, so a leaked access token is not made to live forever."""
        old = request.old_token
        if not old:
            raise TokenInvalid("old_token is required")
        if old.count(".") == 2:  # a JWT: header.claims.signature
            pair = await self.hub.auth.exchange(old)
        else:
            pair = await self.hub.auth.refresh(old)
        return pb.RefreshTokenResponse(
            success=True, message="token refreshed", new_token=pair.access_token, **_renewal(pair)
        )


# -- tasks, user side ---------------------------------------------------------------------------------


def hub_task_id(owner: str, client_task_id: str) -> str:
    """The hub's id for a task a client named: per owner, so two users' ids never meet, and
    deterministic, so a retried upload meets its first attempt instead of holding escrow twice."""
    return hashlib.sha256(f"{owner}\0{client_task_id}".encode()).hexdigest()[:32]


class MasterNodeService(Servicer, pb_grpc.MasterNodeServiceServicer):
    @adapter
    async def UploadTask(
        self, request: pb.UploadTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadTaskResponse:
        principal = await self.principal(request.token, context)
        client_id = request.task_id or uuid.uuid4().hex
        if len(client_id) > CLIENT_TASK_ID_MAX or not client_id.isprintable():
            raise InvalidInput(
                f"task_id must be 1-{CLIENT_TASK_ID_MAX} printable characters", field="task_id"
            )
        files = self.hub.tasks.files
        staged: Path | None = None
        names: list[str] = []
        try:
            if request.task_zip:
                staged = files.root / "staging" / uuid.uuid4().hex
                names = await asyncio.to_thread(files.bundle_from_zip, request.task_zip, staged)
            new = _new_task(request, client_id, names, self.hub.settings.grpc_default_price_micro_per_ksec)
            row = await self.hub.tasks.submit(
                principal, new, staged, task_id=hub_task_id(principal.username, client_id)
            )
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        return pb.UploadTaskResponse(
            success=True,
            message="task queued",
            task_id=client_id,
            status=hivemind.status_of(row.view.state),
            hold_micro=row.hold_micro,
        )

    @adapter
    async def GetTaskResult(
        self, request: pb.GetTaskResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTaskResultResponse:
        """A finished task's result zip: the one its worker uploaded, or a zip of the files it sent."""
        _, row = await self._task(request.task_id, request.token, context)
        view = row.view
        status = hivemind.status_of(view.state)
        if not view.is_terminal:
            return pb.GetTaskResultResponse(
                success=False, message=f"task is {status}; no result yet", status=status
            )
        artifacts = row.artifacts or []
        limit = self.hub.settings.max_bundle_bytes
        if sum(int(a.get("size", 0)) for a in artifacts) > limit:
            raise PayloadTooLarge(
                f"the results are over {limit} bytes; download them over HTTP "
                f"(GET /v1/tasks/{view.task_id}/artifacts/...)",
                details={"limit": limit},
            )
        result = await asyncio.to_thread(_result_zip, self.hub.tasks.files, view.task_id, artifacts)
        answer = pb.GetTaskResultResponse(
            success=bool(result),
            message=f"task {status}" if result else f"task {status}; it left no result",
            result_zip=result,
            status=status,
        )
        if view.exit_code is not None:
            answer.exit_code = view.exit_code
        return answer

    @adapter
    async def GetAllUserTasks(
        self, request: pb.GetAllUserTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAllTasksResponse:
        principal = await self.principal(request.token, context)
        answer = pb.GetAllTasksResponse()
        before: tuple[float, str] | tuple[None, None] = (None, None)
        while True:  # newest first, a page at a time: every task, without one unbounded query
            rows = await self.hub.tasks.page(principal, ALL_TASKS_PAGE, before[0], before_id=before[1])
            answer.tasks.extend(self._info(row) for row in rows)
            if len(rows) < ALL_TASKS_PAGE:
                return answer
            before = (rows[-1].view.submitted_at, rows[-1].view.task_id)

    @adapter
    async def StopTask(
        self, request: pb.StopTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopTaskResponse:
        principal, row = await self._task(request.task_id, request.token, context)
        view = await self.hub.tasks.stop(principal, row.view.task_id)
        message = "stopped" if view.is_terminal else "stop sent to the node"
        return pb.StopTaskResponse(success=True, message=message, status=hivemind.status_of(view.state))

    @adapter
    async def GetTasklog(
        self, request: pb.TasklogRequest, context: grpc.aio.ServicerContext
    ) -> pb.TasklogResponse:
        _, row = await self._task(request.task_id, request.token, context)
        parts: list[str] = []
        cursor = 0
        while chunk := await self.hub.tasks.output(row.view.task_id, cursor):
            parts.extend(r.data for r in chunk)
            cursor = chunk[-1].seq + 1
        return pb.TasklogResponse(success=True, log="".join(parts))

    async def _task(
        self, task_id: str, token: str, context: grpc.aio.ServicerContext
    ) -> tuple[Principal, TaskRow]:
        """The caller's task by the id they uploaded it with, or by the hub's own id."""
        principal = await self.principal(token, context)
        if not task_id:
            raise InvalidInput("task_id is required", field="task_id")
        try:
            return principal, await self.hub.tasks.get(principal, hub_task_id(principal.username, task_id))
        except NotFound:
            if not task_id.isalnum():
                raise
            return principal, await self.hub.tasks.get(principal, task_id)

    def _info(self, row: TaskRow) -> pb.TaskInfo:
        """A task as HiveMind lists it; the usage figures are what the hub recorded when it settled."""
        view, usage = row.view, row.usage or {}
        duration = float(usage.get("duration_sec") or 0)
        cpu_seconds = float(usage.get("cpu_seconds") or 0)
        node = self.hub.live.nodes.get(view.assigned_node or "")
        return pb.TaskInfo(
            # An uploaded task is shown by the id its client chose (kept as its name).
            task_id=row.name if hub_task_id(row.owner, row.name) == view.task_id else view.task_id,
            status=hivemind.status_of(view.state),
            message=view.outcome.value if view.outcome else "",
            cpu_usage=hivemind.int32(100.0 * cpu_seconds / duration if duration > 0 else 0.0),
            memory_usage=hivemind.int32(float(usage.get("ram_peak_mb") or 0)),
            gpu_usage=hivemind.int32(float(usage.get("gpu_util_avg") or 0)),
            gpu_memory_usage=hivemind.int32(float(usage.get("vram_peak_mb") or 0)),
            worker_ip=_host_of(str(node.record.spec.get("addr") or "")) if node else "",
            cost_micro=row.charge_micro or 0,
            state=view.state.value,
            duration_sec=duration,
        )


def _host_of(addr: str) -> str:
    """``http://10.0.0.7:8080`` or ``10.0.0.7:8080`` → ``10.0.0.7``: HiveMind shows a worker's IP."""
    return urlsplit(addr if "://" in addr else f"//{addr}").hostname or ""


def _result_zip(files: TaskFiles, task_id: str, artifacts: list[dict[str, Any]]) -> bytes:
    """A worker's own ``result.zip`` as it sent it; otherwise the task's artifacts zipped; none: empty."""
    if not artifacts:
        return b""
    if [a["path"] for a in artifacts] == [RESULT_ARTIFACT]:
        return files.artifact(task_id, RESULT_ARTIFACT).read_bytes()
    return files.artifacts_zip(task_id, artifacts)


def _new_task(request: pb.UploadTaskRequest, client_id: str, names: list[str], default_price: int) -> NewTask:
    """The upload as the HTTP API's ``TaskIn``, checked by the same rules; HiveMind's zero means unset."""
    command = list(request.command)
    if not command:
        found = [argv for name, argv in DEFAULT_ENTRYPOINTS if name in names]
        if not found:
            raise InvalidInput(
                "give a command, or put run.sh or main.py at the top of task_zip", field="command"
            )
        command = found[0]
    requirements: dict[str, Any] = {
        "min_ram_gb": request.memory_gb or None,
        "min_vram_gb": request.gpu_memory_gb or None,
        "gpu_count": request.gpu_count or None,
        "accel": [request.gpu_name] if request.gpu_name else [],
        "region": hivemind.region_of(request.location),
    }
    body = {
        "name": client_id,
        "command": command,
        "env": dict(request.env),
        "requirements": requirements,
        "max_price_micro_per_ksec": request.max_price_micro_per_ksec or default_price,
        "timeout_sec": request.timeout_sec or 3600.0,
        "max_attempts": request.max_attempts or 3,
    }
    try:
        return TaskIn.model_validate(body).to_new_task()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from exc


_ADDERS: tuple[tuple[Callable[[Any, grpc.aio.Server], None], type[Servicer]], ...] = (
    (pb_grpc.add_UserServiceServicer_to_server, UserService),
    (pb_grpc.add_NodeManagerServiceServicer_to_server, NodeManagerService),
    (pb_grpc.add_MasterNodeServiceServicer_to_server, MasterNodeService),
    (pb_grpc.add_WorkerNodeServiceServicer_to_server, WorkerNodeService),
)


def add_services(server: grpc.aio.Server, hub: Hub) -> list[str]:
    """Register the four services on ``server``; their full names, for reflection."""
    for add, servicer in _ADDERS:
        add(servicer(hub), server)
    return [service.full_name for service in pb.DESCRIPTOR.services_by_name.values()]
