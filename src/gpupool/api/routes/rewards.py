"""Contributions and rewards (SPEC §3.5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gpupool.api.deps import AdminDep, HubDep, PrincipalDep
from gpupool.bounds import ADDRESS_PATTERN, MAX_JSON_INT, MAX_MONEY_MICRO

router = APIRouter(prefix="/v1", tags=["rewards"])


class DistributeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: StrictInt | None = Field(
        None, ge=0, le=MAX_JSON_INT, description="default: the last finished epoch"
    )


class ContributionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_id: str = Field(min_length=1, max_length=64)
    compute_score: StrictInt = Field(gt=0, le=MAX_MONEY_MICRO)
    reason: str = Field(min_length=3, max_length=500, description="kept with the contribution (audit)")


@router.post("/rewards/distribute")
async def distribute(hub: HubDep, _admin: AdminDep, body: DistributeIn | None = None) -> dict[str, Any]:
    """Close an epoch and pay it; a second call pays nothing.

    Every payout's ``transaction_signature`` is the hub's one signature over the epoch's Merkle root,
    and its ``receipt`` is that signed root plus the payout's inclusion proof (``gpupool verify-receipt``).
    """
    result = await hub.rewards.distribute(body.epoch if body else None)
    return {
        "epoch": result.epoch,
        "already_distributed": result.already_distributed,
        "emission": result.emission_micro,
        "merkle_root": result.sealed.root_hex if result.sealed else None,
        "payouts": [
            {
                "owner": p.owner,
                "amount": p.amount_micro,
                "status": p.status,
                "transaction_signature": result.sealed.signature if result.sealed else None,
                "success": True,
                "receipt": result.receipt(i),
            }
            for i, p in enumerate(result.payouts)
        ],
    }


@router.get("/rewards/balance")
async def reward_balance(
    hub: HubDep, _principal: PrincipalDep, address: Annotated[str, Query(pattern=ADDRESS_PATTERN)]
) -> dict[str, Any]:
    return await hub.rewards.balance(address)


@router.get("/contributions/stats")
async def contribution_stats(
    hub: HubDep,
    _principal: PrincipalDep,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(pattern=ADDRESS_PATTERN)] = None,
) -> dict[str, Any]:
    return await hub.rewards.stats(node_id, owner)


@router.post("/admin/contributions", status_code=status.HTTP_201_CREATED)
async def record_contribution(body: ContributionIn, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """An admin's hand-recorded contribution; who and why are stored with it."""
    recorded = await hub.rewards.record_by_admin(admin, body.node_id, body.compute_score, body.reason)
    return {"recorded": recorded, "node_id": body.node_id, "compute_score": body.compute_score}
