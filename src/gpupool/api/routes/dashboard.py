"""What the dashboard reads beyond the public API: the last hour of the pool, one node, users, rounds.

The history is the hub's in-memory ring (``hub/history.py``); nothing here writes. Signed-in users see
the pool and its nodes (no owners or keys, as ``/v1/pool``); users are for admins.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from gpupool.api.deps import AdminDep, HubDep, PrincipalDep
from gpupool.core.units import tokens_from_micro
from gpupool.errors import NotFound
from gpupool.hub.live import NodeSpec
from gpupool.store.dashboard_repo import DashboardRepo
from gpupool.store.poc_repo import PocRepo

router = APIRouter(prefix="/v1", tags=["dashboard"])
MinerId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/pool/history")
async def pool_history(hub: HubDep, _principal: PrincipalDep) -> dict[str, Any]:
    """The pool's last hour, one point per sample: nodes and GPUs online, tasks/s, match latency."""
    return {"interval_sec": hub.history.interval_s, "points": list(hub.history.pool)}


@router.get("/pool/nodes/{miner_id}")
async def pool_node(miner_id: MinerId, hub: HubDep, _principal: PrincipalDep) -> dict[str, Any]:
    """One node as the dashboard shows it: GPUs, price, trust, PoC weight and its GPUs' last hour."""
    node = hub.live.nodes.get(miner_id)
    if node is None:
        raise NotFound(f"no node {miner_id} is known to this hub", code="unknown_miner")
    spec = NodeSpec.from_record(node.record)
    return {
        "miner_id": miner_id,
        "online": node.online,
        "last_seen": node.last_seen,
        "region": spec.region,
        "gpus": [{"index": g.index, "name": g.name, "vram_gb": g.vram_gb} for g in spec.gpus],
        "cpu_cores": spec.cpu_cores,
        "price_token_per_ksec": tokens_from_micro(spec.price_micro_per_ksec),
        "price_micro_per_ksec": spec.price_micro_per_ksec,
        "queue_len": node.queue_len,
        "max_parallel": spec.max_parallel,
        "trust": node.record.trust,
        "poc_weight": node.record.poc_weight,
        "interval_sec": hub.history.interval_s,
        "history": hub.history.node(miner_id),
    }


@router.get("/admin/users")
async def list_users(
    hub: HubDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[dict[str, Any]]:
    async with hub.db.read() as conn:
        return await DashboardRepo(conn).users(limit)


@router.get("/poc/rounds")
async def recent_rounds(
    hub: HubDep, _principal: PrincipalDep, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> list[dict[str, Any]]:
    """The newest PoC rounds, each with its per-node results once validated."""
    async with hub.db.read() as conn:
        repo = PocRepo(conn)
        heights = [h for s in ("open", "closed", "validated") for h in await repo.heights(s)]
    return [await hub.poc.round(h) for h in sorted(heights, reverse=True)[:limit]]
