"""Seed-000 registry endpoints and their admin side: permissions, workers, allowlist, owner API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from gpupool.api.deps import AdminDep, HubDep, PrincipalDep
from gpupool.api.routes.miners import miner_out
from gpupool.api.schemas_registry import (
    AllowIn,
    AllowOut,
    ApiKeyIn,
    ApiKeyOut,
    MinerOut,
    OwnApiKeyIn,
    OwnApiKeyOut,
    PermissionsOut,
    WorkerIn,
    WorkerOut,
)
from gpupool.bounds import MAX_PAGE, PUBKEY_PATTERN
from gpupool.store.registry_repo import ApiKeyRecord, WorkerRecord

router = APIRouter(tags=["registry"])
PubkeyPath = Annotated[str, Path(pattern=PUBKEY_PATTERN, description="64 hex characters or an npub")]


def _worker(record: WorkerRecord) -> WorkerOut:
    return WorkerOut(**{k: getattr(record, k) for k in WorkerRecord.__slots__})


def _api_key(record: ApiKeyRecord, key: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(**{k: getattr(record, k) for k in ApiKeyRecord.__slots__}, key=key)


@router.get("/permissions/{pubkey}", response_model=PermissionsOut)
async def permissions(pubkey: PubkeyPath, hub: HubDep) -> PermissionsOut:
    return PermissionsOut.model_validate(await hub.registry.permissions(pubkey))


@router.post("/workers", response_model=WorkerOut, status_code=status.HTTP_201_CREATED)
async def register_worker(body: WorkerIn, request: Request, hub: HubDep) -> WorkerOut:
    """Signed (kind 21000): binds the key to its owner. Unsigned (the DStack backend): pending."""
    return _worker(await hub.registry.register_worker(await request.json()))


@router.get("/v1/admin/workers", response_model=list[WorkerOut])
async def list_workers(
    hub: HubDep,
    _admin: AdminDep,
    status_: Annotated[str | None, Query(alias="status", pattern="^(pending|authorized)$")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[WorkerOut]:
    return [_worker(w) for w in await hub.registry.workers(status_, page, page_size)]


@router.post("/v1/admin/workers/{pubkey}/approve", response_model=WorkerOut)
async def approve_worker(pubkey: PubkeyPath, hub: HubDep, _admin: AdminDep) -> WorkerOut:
    return _worker(await hub.registry.approve_worker(pubkey))


@router.post("/v1/admin/miners/{miner_id}/approve", response_model=MinerOut)
async def approve_miner(miner_id: str, hub: HubDep, _admin: AdminDep) -> MinerOut:
    """Admit a pending account-bound node (registry mode ``allowlist``): it is matched from now on."""
    return miner_out(await hub.registry.approve_miner(miner_id))


@router.get("/v1/admin/allowlist", response_model=list[AllowOut])
async def allowlist(hub: HubDep, _admin: AdminDep) -> list[AllowOut]:
    return [AllowOut(entry=e["entry"], kind=e["kind"]) for e in await hub.registry.allowlist()]


@router.post("/v1/admin/allowlist", response_model=AllowOut, status_code=status.HTTP_201_CREATED)
async def allow(body: AllowIn, hub: HubDep, admin: AdminDep) -> AllowOut:
    return AllowOut.model_validate(await hub.registry.allow(admin, body.entry))


@router.delete("/v1/admin/allowlist/{entry}", status_code=status.HTTP_204_NO_CONTENT)
async def disallow(entry: str, hub: HubDep, _admin: AdminDep) -> Response:
    await hub.registry.disallow(entry)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _own_key(record: ApiKeyRecord, key: str | None = None) -> OwnApiKeyOut:
    return OwnApiKeyOut(
        id=record.id,
        key=key,
        owner=record.owner,
        name=record.label,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
        admits=record.admits,
    )


@router.post("/v1/api-keys", response_model=OwnApiKeyOut, status_code=status.HTTP_201_CREATED)
async def create_own_api_key(body: OwnApiKeyIn, hub: HubDep, principal: PrincipalDep) -> OwnApiKeyOut:
    """Self-service (SPEC §8.2): the key is in this response only; the hub keeps its hash."""
    record, key = await hub.registry.create_own_api_key(principal, body.owner, body.name)
    return _own_key(record, key)


@router.get("/v1/api-keys", response_model=list[OwnApiKeyOut])
async def list_own_api_keys(hub: HubDep, principal: PrincipalDep) -> list[OwnApiKeyOut]:
    return [_own_key(r) for r in await hub.registry.api_keys(None, created_by=principal.username)]


@router.delete("/v1/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_own_api_key(key_id: str, hub: HubDep, principal: PrincipalDep) -> Response:
    """Revoke one's own key (an admin: any key); its nodes can no longer heartbeat with it."""
    await hub.registry.revoke_api_key(key_id, None if principal.is_admin else principal.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/admin/api-keys", response_model=ApiKeyOut, status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyIn, hub: HubDep, _admin: AdminDep) -> ApiKeyOut:
    """The key is in this response only; the hub keeps its hash."""
    record, key = await hub.registry.create_api_key(body.owner, body.label)
    return _api_key(record, key)


@router.get("/v1/admin/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(hub: HubDep, _admin: AdminDep, owner: str | None = None) -> list[ApiKeyOut]:
    return [_api_key(r) for r in await hub.registry.api_keys(owner)]


@router.delete("/v1/admin/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: str, hub: HubDep, _admin: AdminDep) -> Response:
    await hub.registry.revoke_api_key(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
