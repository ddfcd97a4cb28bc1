"""The one way a posting is written: claim its key, move the balances, record the entries.

``LedgerService`` (transfers, mints) and the services that move money with their own rows (task
escrow and settlement, rewards) all write through ``post``, inside the caller's transaction. A key
taken already by the same request is a replay: the first posting is returned and nothing moves; by a
different request it is an ``IdempotencyConflict``. The balances' CHECK constraint refuses an overdraft
atomically, so a refused posting writes nothing.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import ledger
from gpupool.errors import IdempotencyConflict
from gpupool.store.ledger_repo import LedgerRepo, NewPosting, PostingRecord

TASKS_SCOPE = "tasks"
"""The scope of the postings services make themselves (escrow, settlement, rewards)."""


@dataclass(frozen=True, slots=True)
class PostResult:
    record: PostingRecord
    replayed: bool


_by_account = operator.attrgetter("account")


def request_hash(posting: ledger.Posting, memo: str | None) -> str:
    """What a key stands for: the same key with another hash is another request."""
    legs = "|".join(f"{e.account}:{e.amount_micro}" for e in sorted(posting.entries, key=_by_account))
    return hashlib.sha256(f"{posting.kind}|{legs}|{memo or ''}".encode()).hexdigest()


def new_posting(
    posting: ledger.Posting,
    *,
    scope: str,
    key: str | None,
    actor: str,
    now: float,
    memo: str | None = None,
) -> NewPosting:
    """The stored form of ``posting`` claimed under ``(scope, key)``."""
    credits = [e for e in posting.entries if e.amount_micro > 0]
    debits = [e for e in posting.entries if e.amount_micro < 0]
    return NewPosting(
        posting=posting,
        scope=scope,
        idempotency_key=key,
        request_hash=request_hash(posting, memo),
        source=debits[0].account if len(debits) == 1 else None,
        destination=credits[0].account if len(credits) == 1 else None,
        amount_micro=sum(e.amount_micro for e in credits),
        actor=actor,
        created_at=now,
        memo=memo,
    )


async def post(conn: AsyncConnection, new: NewPosting, *, open_as: str | None = None) -> PostResult:
    """Write ``new`` once per ``(scope, key)`` in the caller's transaction; a replay returns the first.

    ``open_as`` (postings with many legs): credited accounts that do not exist yet are opened with
    this type in the same statement that credits them.
    """
    repo = LedgerRepo(conn)
    posting_id = await repo.claim(new)
    if posting_id is None:
        existing = await repo.find(new.scope, str(new.idempotency_key))
        if existing is None or existing.request_hash != new.request_hash:
            raise IdempotencyConflict(
                "idempotency key already used for a different request",
                details={"key": new.idempotency_key},
            )
        return PostResult(existing, replayed=True)
    if len(new.posting.entries) > 8 or open_as is not None:
        await repo.apply_many(posting_id, new.posting, open_as=open_as, now=new.created_at)
    else:
        await repo.apply(posting_id, new.posting)
    return PostResult(_record(posting_id, new), replayed=False)


async def post_in(
    conn: AsyncConnection,
    posting: ledger.Posting,
    key: str,
    actor: str,
    now: float,
    *,
    open_as: str | None = None,
) -> int:
    """``post`` of a service's own posting (scope ``tasks``); returns the posting's id."""
    new = new_posting(posting, scope=TASKS_SCOPE, key=key, actor=actor, now=now)
    return (await post(conn, new, open_as=open_as)).record.id


async def post_many_in(
    conn: AsyncConnection, keyed_postings: Sequence[tuple[ledger.Posting, str, str]], now: float
) -> None:
    """Many (posting, key, actor) at once (group commit), all under new keys.

    A key taken already fails the whole batch with Conflict (nothing written): the caller then
    writes each one through ``post``, which tells a replay from a conflict.
    """
    news = [
        new_posting(p, scope=TASKS_SCOPE, key=key, actor=actor, now=now) for p, key, actor in keyed_postings
    ]
    await LedgerRepo(conn).post_many(news)


def _record(posting_id: int, new: NewPosting) -> PostingRecord:
    return PostingRecord(
        id=posting_id,
        kind=new.posting.kind.value,
        scope=new.scope,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        source=new.source,
        destination=new.destination,
        amount_micro=new.amount_micro,
        actor=new.actor,
        memo=new.memo,
        created_at=new.created_at,
    )
