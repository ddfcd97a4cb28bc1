"""The DStack mining backend's registry calls (seed 000; Phala-Network/dstack-mining-backend).

Versions since 0b70e9a read ``GET /permissions/{pubkey}`` (``registered``, then ``write.mode``) and
``POST /workers`` (native routes); b6a4dfc and later also poll ``GET /workers/{pubkey}``: b6a4dfc
waits for its ``mint_tx_hash``, ed5b614 and later take any answer but 404 as registered.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter
from pydantic import BaseModel

from gpupool.api.deps import HubDep
from gpupool.store.registry_repo import WorkerRecord

router = APIRouter(tags=["dstack"])


class WorkerStatusOut(BaseModel):
    """The backend's ``WorkerStatusResponse`` (``pubkey``, ``owner``, ``node_type``, ``mint_tx_hash``)
    and the hub's record beside it."""

    pubkey: str
    owner: str
    node_type: str
    mint_tx_hash: str | None
    status: str
    signed: bool
    created_at: float
    updated_at: float


@router.get("/workers/{pubkey}", response_model=WorkerStatusOut)
async def worker(pubkey: str, hub: HubDep) -> WorkerStatusOut:
    record = await hub.registry.worker(pubkey)
    return WorkerStatusOut(
        pubkey=record.pubkey,
        owner=record.owner or "",
        node_type=record.node_type,
        mint_tx_hash=_admission_id(record),
        status=record.status,
        signed=record.signed,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _admission_id(record: WorkerRecord) -> str | None:
    """There is no chain here: what the backend waits for as a mint is the admission, so an
    authorized worker answers with a stable id of it, and a pending one with null (still waiting)."""
    if record.status != "authorized":
        return None
    text = f"gpupool-admission\0{record.pubkey}\0{record.owner}\0{record.created_at!r}"
    return "0x" + hashlib.sha256(text.encode()).hexdigest()
