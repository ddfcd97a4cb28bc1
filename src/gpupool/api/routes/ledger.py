"""Balances, transfers, minting and the trial balance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gpupool.api.deps import AdminDep, HubDep, PrincipalDep
from gpupool.api.schemas import BalanceOut, TransferIn, TransferList, TransferOut, TrialBalanceOut
from gpupool.bounds import MAX_JSON_INT
from gpupool.hub.ledger import Balance, PostResult
from gpupool.store.ledger_repo import PostingRecord

router = APIRouter(prefix="/v1", tags=["ledger"])


def _transfer(record: PostingRecord, replayed: bool = False) -> TransferOut:
    return TransferOut(
        id=record.id,
        kind=record.kind,
        source=record.source,
        to=record.destination,
        amount=record.amount_micro,
        idempotency_key=record.idempotency_key,
        created_at=record.created_at,
        replayed=replayed,
    )


def _posted(result: PostResult, response: Response) -> TransferOut:
    if result.replayed:
        response.status_code = status.HTTP_200_OK
    return _transfer(result.record, result.replayed)


def _balance(balance: Balance) -> BalanceOut:
    return BalanceOut(account=balance.account, available=balance.available, held=balance.held)


@router.get("/balance", response_model=BalanceOut)
async def balance(hub: HubDep, principal: PrincipalDep) -> BalanceOut:
    return _balance(await hub.ledger.balance(principal.account))


@router.post(
    "/transfers",
    response_model=TransferOut,
    response_model_by_alias=True,
    status_code=status.HTTP_201_CREATED,
)
async def create_transfer(
    body: TransferIn, hub: HubDep, principal: PrincipalDep, response: Response
) -> TransferOut:
    result = await hub.ledger.transfer(principal, body.to, body.amount, body.idempotency_key)
    return _posted(result, response)


@router.get("/transfers", response_model=TransferList, response_model_by_alias=True)
async def list_transfers(
    hub: HubDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_JSON_INT, description="id of the last transfer seen")
    ] = None,
) -> TransferList:
    records = await hub.ledger.history(principal.account, limit=limit, before_id=before)
    next_before = records[-1].id if len(records) == limit else None
    return TransferList(transfers=[_transfer(r) for r in records], next_before=next_before)


@router.post(
    "/admin/mint",
    response_model=TransferOut,
    response_model_by_alias=True,
    status_code=status.HTTP_201_CREATED,
)
async def mint(body: TransferIn, hub: HubDep, admin: AdminDep, response: Response) -> TransferOut:
    result = await hub.ledger.mint(admin, body.to, body.amount, body.idempotency_key)
    return _posted(result, response)


@router.get("/admin/accounts/{account}", response_model=BalanceOut)
async def account_balance(account: str, hub: HubDep, _admin: AdminDep) -> BalanceOut:
    return _balance(await hub.ledger.balance(hub.ledger.resolve_account(account)))


@router.get("/admin/ledger/trial-balance", response_model=TrialBalanceOut)
async def trial_balance(hub: HubDep, _admin: AdminDep) -> TrialBalanceOut:
    tb = await hub.ledger.trial_balance()
    return TrialBalanceOut(
        balanced=tb.balanced, total=tb.total_micro, accounts=tb.accounts, totals_by_type=tb.totals_by_type
    )
