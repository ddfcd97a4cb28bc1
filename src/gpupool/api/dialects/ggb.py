"""GGB's edge API (seed 004; logos-42/GGB ``src/solana/types.rs``): ``/api/*`` with its serde shapes.

Field names are GGB's snake_case, enums its Rust variant names (``Active``, ``Completed``), times
integer seconds, amounts ``*_lamports`` = micro-units. Nodes are account-bound (an owner API key in
``X-Api-Key``) or speak with their session; rewards are distributed by an admin and computed by the
hub's own rule from what it measured.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gpupool.api.deps import AdminDep, HubDep, PrincipalDep
from gpupool.api.dialects import parsed
from gpupool.api.schemas_registry import NAME_PATTERN
from gpupool.api.schemas_tasks import TaskIn
from gpupool.errors import GpupoolError, InvalidInput, Unauthenticated
from gpupool.hub.container import Hub
from gpupool.hub.live import NodeSpec
from gpupool.store.registry_repo import MinerRecord
from gpupool.store.tasks_repo import TaskRow

router = APIRouter(prefix="/api", tags=["ggb"])
_bearer = HTTPBearer(auto_error=False)
BIG = 10**12  # bound on GGB's u64 counters
NodeId = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
ApiKey = Annotated[str | None, Header(alias="X-Api-Key", max_length=256)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Count = Annotated[StrictInt, Field(ge=0, le=BIG)]
Seconds = Annotated[StrictInt, Field(ge=0, le=2**40)]
Percent = Annotated[float, Field(ge=0, le=100)]
GGB_STATUS = {"online": "Active", "offline": "Offline", "pending": "Paused"}


class NodeInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    node_id: NodeId
    owner_address: str = Field("", max_length=80)
    name: str = Field("", max_length=128)
    device_type: str = Field("", max_length=64)
    registered_at: Seconds = 0
    last_active_at: Seconds = 0
    status: Literal["Active", "Offline", "Paused", "Banned"] = "Active"


class ComputeContribution(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    node_id: NodeId
    task_id: str = Field("", max_length=64)
    start_timestamp: Seconds
    end_timestamp: Seconds
    duration_seconds: Count
    avg_gpu_usage_percent: Percent
    gpu_memory_used_mb: Count
    avg_cpu_usage_percent: Percent
    memory_used_mb: Count
    network_upload_mb: Count
    network_download_mb: Count
    samples_processed: Count
    batches_processed: Count
    compute_score: float = Field(ge=0, le=BIG, allow_inf_nan=False)


class RewardDistribution(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(max_length=64)
    node_id: str = Field(max_length=64)
    task_id: str = Field("", max_length=64)
    amount_lamports: Count = 0
    distributed_at: Seconds = 0
    transaction_signature: str = Field("", max_length=256)
    status: Literal["Pending", "Confirmed", "Completed", "Failed"] = "Pending"


def node_info(record: MinerRecord) -> dict[str, Any]:
    tags = NodeSpec.from_record(record).tags
    return {
        "node_id": record.miner_id,
        "owner_address": record.owner,
        "name": record.miner_id,
        "device_type": tags[0] if tags else ("gpu" if record.spec.get("gpus") else "cpu"),
        "registered_at": int(record.registered_at),
        "last_active_at": int(record.last_seen),
        "status": GGB_STATUS.get(record.status, "Offline"),
    }


async def speaking_node(hub: Hub, node_id: str, api_key: str | None, bearer: Bearer) -> str:
    """The node an owner API key (``X-Api-Key``) or a node session (``Bearer``) speaks for."""
    if api_key:
        return await hub.registry.bound_miner(await hub.registry.api_key_binding(api_key), node_id)
    if bearer is not None:
        return await hub.sessions.resolve(bearer.credentials, node_id)
    raise Unauthenticated("an owner API key (X-Api-Key) or a node session is required")


async def reader(hub: HubDep, bearer: Bearer, api_key: ApiKey = None) -> None:
    """Listing routes: any owner key, user token or node session."""
    if api_key:
        await hub.registry.api_key_binding(api_key)
        return
    if bearer is None:
        raise Unauthenticated("an owner API key (X-Api-Key) or a bearer token is required")
    try:
        await hub.auth.authenticate(bearer.credentials)
    except GpupoolError:
        await hub.sessions.resolve(bearer.credentials)


ReaderDep = Depends(reader)


@router.post("/nodes/register")
async def register_node(body: NodeInfo, hub: HubDep, api_key: ApiKey = None) -> dict[str, Any]:
    """NodeInfo with an owner API key: an account-bound node (pending in allowlist mode)."""
    if not api_key:
        raise Unauthenticated("registration takes an owner API key (X-Api-Key)")
    binding = await hub.registry.api_key_binding(api_key)
    spec = NodeSpec(
        pubkey=None,
        owner=binding.owner,
        miner_id=body.node_id,
        cpu_cores=0,
        ram_gb=0.0,
        price_micro_per_ksec=hub.settings.grpc_default_price_micro_per_ksec,
        max_parallel=1,
        tags=(body.device_type,) if body.device_type else (),
    )
    done = await hub.registry.admit_account_bound(binding, spec)
    return {"status": "OK", "node_status": done.status, "session_token": done.session_token}


@router.post("/nodes/heartbeat")
async def node_heartbeat(
    hub: HubDep, bearer: Bearer, node_id: Annotated[str, Query(max_length=64)], api_key: ApiKey = None
) -> dict[str, str]:
    miner_id = await speaking_node(hub, node_id, api_key, bearer)
    await hub.sessions.touch(miner_id, 0, None)
    return {"status": "OK"}


@router.get("/nodes/list", dependencies=[ReaderDep])
async def list_nodes(hub: HubDep, active: bool | None = None) -> list[dict[str, Any]]:
    records, _total = await hub.registry.miners("online" if active else None, 1, 500)
    return [node_info(r) for r in records if active is not False or r.status != "online"]


@router.get("/nodes/node", dependencies=[ReaderDep])
async def get_node(hub: HubDep, node_id: Annotated[str, Query(max_length=64)]) -> dict[str, Any]:
    return node_info(await hub.registry.miner(node_id))


@router.post("/contributions/record")
async def record_contribution(
    body: ComputeContribution, hub: HubDep, bearer: Bearer, api_key: ApiKey = None
) -> dict[str, Any]:
    """Stored and shown, flagged ``reported``: the node measured it, not the hub."""
    miner_id = await speaking_node(hub, body.node_id, api_key, bearer)
    if body.end_timestamp < body.start_timestamp:
        raise InvalidInput("end_timestamp is before start_timestamp", field="end_timestamp")
    values = body.model_dump(exclude={"id", "node_id", "task_id"})
    values["compute_score"] = round(body.compute_score)  # the hub's scores are integers
    values["start_timestamp"], values["end_timestamp"] = (
        float(body.start_timestamp),
        float(body.end_timestamp),
    )
    values["duration_seconds"] = float(body.duration_seconds)
    await hub.rewards.record_reported(miner_id, body.id, values)
    return {"status": "OK", "contribution_id": body.id}


@router.get("/contributions/stats", dependencies=[ReaderDep])
async def contribution_stats(hub: HubDep, node_id: Annotated[str, Query(max_length=64)]) -> dict[str, Any]:
    """ComputeStats: integer seconds and MB, percentages as numbers (0 when nothing was measured)."""
    stats = await hub.rewards.stats(node_id, None)
    return {
        "node_id": node_id,
        "total_compute_seconds": math.floor(stats["total_compute_seconds"]),
        "total_samples_processed": stats["total_samples_processed"],
        "total_compute_score": float(stats["total_compute_score"]),
        "avg_gpu_usage_percent": stats["avg_gpu_usage_percent"] or 0.0,
        "avg_cpu_usage_percent": stats["avg_cpu_usage_percent"] or 0.0,
        "total_network_mb": stats["total_network_mb"],
        "contribution_count": stats["contribution_count"],
        "reported_count": stats["reported_count"],
    }


@router.post("/rewards/distribute")
async def distribute(
    body: Annotated[list[RewardDistribution], Field(max_length=10_000)], hub: HubDep, _admin: AdminDep
) -> list[dict[str, Any]]:
    """Closes the last finished epoch and pays it by the hub's rule (compute score from what the hub
    measured); the listed amounts are not taken as instructions. One result per payout."""
    result = await hub.rewards.distribute(None)
    signature = result.sealed.signature if result.sealed else ""
    return [{"transaction_signature": signature, "success": True} for _ in result.payouts]


@router.get("/rewards/balance", dependencies=[ReaderDep])
async def reward_balance(hub: HubDep, address: Annotated[str, Query(max_length=80)]) -> dict[str, Any]:
    """NodeWalletBalance; ``*_lamports`` are micro-units."""
    balance = await hub.rewards.balance(address)
    return {
        "node_id": "",
        "wallet_address": balance["wallet_address"],
        "sol_balance_lamports": balance["balance"],
        "pending_rewards_lamports": balance["pending_rewards"],
        "total_rewards_distributed_lamports": balance["total_rewards_distributed"],
        "last_updated_at": int(balance["last_updated_at"] or 0),
    }


# -- tasks: GGB's scheduler rows (scripts/schema.sql ``tasks``) over the hub's tasks --------------------

GGB_TASK_STATUS = {
    "queued": "Pending",
    "assigned": "Pending",
    "running": "Running",
    "succeeded": "Completed",
    "failed": "Failed",
    "expired": "Failed",
    "stopped": "Cancelled",
}


class TaskParams(BaseModel):
    """What a gpupool node needs to run the task; a price cap in tokens (or its micro twin)."""

    model_config = ConfigDict(extra="ignore")
    command: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    max_price_token_per_ksec: Any = None
    max_price_micro_per_ksec: Any = None
    timeout_sec: float = Field(3600, gt=0, le=7 * 86400)


class GgbTaskIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task_type: Literal["Training", "Inference", "Validation", "DataCollection"]
    params: TaskParams
    priority: StrictInt = Field(0, ge=0, le=1_000)


@router.post("/tasks/add")
async def add_task(body: GgbTaskIn, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    """A task for the signed-in user, held and queued as ``POST /v1/tasks`` would (same rules)."""
    cap = {
        k: v
        for k, v in body.params.model_dump(
            include={"max_price_token_per_ksec", "max_price_micro_per_ksec"}
        ).items()
        if v is not None
    } or {"max_price_micro_per_ksec": hub.settings.grpc_default_price_micro_per_ksec}
    task = parsed(
        TaskIn,
        {
            "name": body.task_type,
            "command": body.params.command,
            "env": body.params.env,
            "timeout_sec": body.params.timeout_sec,
            **cap,
        },
    )
    row = await hub.tasks.submit(principal, task.to_new_task())
    return {"status": "OK", "task_id": row.view.task_id}


@router.post("/tasks/cancel")
async def cancel_task(
    hub: HubDep, principal: PrincipalDep, task_id: Annotated[str, Query(max_length=64)]
) -> dict[str, str]:
    await hub.tasks.stop(principal, task_id)
    return {"status": "OK"}


@router.get("/tasks/list")
async def list_tasks(hub: HubDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's newest tasks as GGB's rows: integer seconds, Rust-style status names."""
    rows = await hub.tasks.page(principal, 100, None)
    return [_ggb_task(r) for r in rows]


def _ggb_task(row: TaskRow) -> dict[str, Any]:
    v = row.view
    return {
        "id": v.task_id,
        "task_type": row.name,
        "params": {"command": row.spec.get("command", [])},
        "target_node": v.assigned_node,
        "priority": v.priority,
        "status": GGB_TASK_STATUS.get(v.state.value, "Pending"),
        "created_at": int(v.submitted_at),
        "scheduled_at": int(v.submitted_at),
        "started_at": None if v.started_at is None else int(v.started_at),
        "completed_at": None if v.finished_at is None else int(v.finished_at),
        "error_message": v.outcome.value if v.outcome and v.state.value != "succeeded" else None,
    }
