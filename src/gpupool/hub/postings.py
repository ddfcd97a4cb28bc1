"""A ledger posting written inside another service's transaction (task escrow, settlement, rewards).

``LedgerService.post`` opens its own transaction; services that must move money and change their own
rows atomically call ``post_in`` with their connection instead. The key is claimed in scope ``tasks``
(or the caller's), so the same movement can never be written twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import ledger
from gpupool.errors import Conflict
from gpupool.hub.ledger import request_hash
from gpupool.store.ledger_repo import LedgerRepo, NewPosting


async def post_in(
    conn: AsyncConnection,
    posting: ledger.Posting,
    key: str,
    actor: str,
    now: float,
    *,
    open_as: str | None = None,
) -> int:
    """One ledger posting inside the caller's transaction, claimed under ``key`` in scope ``tasks``.

    ``open_as`` (postings with many legs only): credited accounts that do not exist yet are opened
    with this type, in the same statement that credits them. Returns the posting's id.
    """
    repo = LedgerRepo(conn)
    new = keyed(posting, key, actor, now)
    posting_id = await repo.claim(new)
    if posting_id is None:
        raise Conflict(f"posting {key} exists already", code="already_settled")
    if len(posting.entries) > 8 or open_as is not None:
        await repo.apply_many(posting_id, posting, open_as=open_as, now=now)
    else:
        await repo.apply(posting_id, posting)
    return posting_id


async def post_many_in(
    conn: AsyncConnection, keyed_postings: Sequence[tuple[ledger.Posting, str, str]], now: float
) -> None:
    """Many (posting, key, actor) in the caller's transaction (group commit); Conflict if a key is taken."""
    await LedgerRepo(conn).post_many([keyed(p, key, actor, now) for p, key, actor in keyed_postings])


def keyed(posting: ledger.Posting, key: str, actor: str, now: float) -> NewPosting:
    """The stored form of a task-scope posting claimed under ``key``."""
    credits = [e for e in posting.entries if e.amount_micro > 0]
    debits = [e for e in posting.entries if e.amount_micro < 0]
    return NewPosting(
        posting=posting,
        scope="tasks",
        idempotency_key=key,
        request_hash=request_hash(posting, None),
        source=debits[0].account if len(debits) == 1 else None,
        destination=credits[0].account if len(credits) == 1 else None,
        amount_micro=sum(e.amount_micro for e in credits),
        actor=actor,
        created_at=now,
        memo=None,
    )
