"""Ledger use cases: transfers, mints, balances, history and the trial balance.

Every movement goes through ``hub/postings.post`` (the one posting path): one transaction claims the
idempotency key, moves the balances (the database refuses an overdraft atomically) and writes the
entries. The same key with the same request returns the first result and moves nothing; with a
different request it is a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import ledger
from gpupool.core.ledger import AccountType, Posting, PostingKind
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.crypto import normalize_owner_address
from gpupool.errors import Forbidden, InvalidInput, NotFound
from gpupool.hub import postings
from gpupool.hub.postings import PostResult as PostResult  # what the ledger routes answer with
from gpupool.hub.postings import new_posting
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo, PostingRecord


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    available: int
    held: int


@dataclass(frozen=True, slots=True)
class TrialBalance:
    balanced: bool
    total_micro: int
    accounts: list[dict[str, object]]
    totals_by_type: dict[str, int]


class LedgerService:
    def __init__(self, db: Database, clock: Clock, max_amount_micro: int) -> None:
        self.db = db
        self.clock = clock
        self.max_amount_micro = max_amount_micro

    @staticmethod
    def resolve_account(name: str) -> str:
        """``bob`` and ``user:bob`` name a user's account, ``0x…`` an owner's (checksum verified)."""
        name = name.strip()
        if name.startswith("0x") or name.startswith("0X"):
            return normalize_owner_address(name)
        account = name if ":" in name else ledger.username_account(name)
        kind = ledger.account_type(account)
        if kind not in (AccountType.USER, AccountType.OWNER):
            raise InvalidInput(f"cannot pay into {account!r}", field="to")
        return account

    async def transfer(
        self, actor: Principal, to: str, amount_micro: int, idempotency_key: str
    ) -> PostResult:
        ledger.check_amount(amount_micro, self.max_amount_micro)
        source, destination = actor.account, self.resolve_account(to)
        posting = ledger.transfer(source, destination, amount_micro)
        return await self.post(posting, scope=source, key=idempotency_key, actor=actor.username)

    async def mint(self, actor: Principal, to: str, amount_micro: int, idempotency_key: str) -> PostResult:
        if not actor.is_admin:
            raise Forbidden("only an admin can mint")
        ledger.check_amount(amount_micro, self.max_amount_micro)
        destination = self.resolve_account(to)
        if ledger.account_type(destination) is AccountType.OWNER:
            await self.open_owner_account(destination)
        posting = ledger.mint(destination, amount_micro)
        return await self.post(posting, scope="admin", key=idempotency_key, actor=actor.username)

    async def open_owner_account(self, address: str) -> None:
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> None:
            repo = LedgerRepo(conn)
            await repo.ensure_account(address, AccountType.OWNER.value, now)
            await repo.ensure_account(ledger.hold_account(address), AccountType.HOLD.value, now)

        await self.db.run(work)

    async def post(
        self, posting: Posting, *, scope: str, key: str | None, actor: str, memo: str | None = None
    ) -> PostResult:
        """Write ``posting`` once per ``(scope, key)``; a repeat returns the first record."""
        new = new_posting(posting, scope=scope, key=key, actor=actor, now=self.clock.now(), memo=memo)

        async def work(conn: AsyncConnection) -> PostResult:
            return await postings.post(conn, new)

        return await self.db.run(work)

    async def balance(self, account: str) -> Balance:
        held_account = ledger.hold_account(account)
        async with self.db.read() as conn:
            found = await LedgerRepo(conn).balances([account, held_account])
        if account not in found:
            raise NotFound(f"unknown account: {account}", details={"account": account})
        return Balance(account=account, available=found[account], held=found.get(held_account, 0))

    async def history(
        self, account: str, *, kind: PostingKind | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[PostingRecord]:
        async with self.db.read() as conn:
            return await LedgerRepo(conn).list_postings(
                account, kind=kind.value if kind else None, limit=limit, before_id=before_id
            )

    async def trial_balance(self) -> TrialBalance:
        async with self.db.read() as conn:
            rows, total = await LedgerRepo(conn).trial_balance()
        by_type: dict[str, int] = defaultdict(int)
        listed: list[dict[str, object]] = []
        consistent = True
        for account, kind, cached, summed in rows:
            by_type[kind] += cached
            consistent &= cached == summed
            listed.append({"account": account, "type": kind, "balance": cached, "entries_sum": summed})
        return TrialBalance(
            balanced=consistent and total == 0,
            total_micro=total,
            accounts=listed,
            totals_by_type=dict(by_type),
        )
