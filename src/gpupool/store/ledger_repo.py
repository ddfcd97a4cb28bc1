"""Ledger storage: accounts with cached balances, postings with idempotency keys, their entries.

A posting is written with three statements in one transaction: insert the posting (which claims the
idempotency key), move every touched balance in one ``UPDATE … CASE`` (the ``non_negative`` CHECK
constraint refuses an overdraft atomically, whatever runs beside it), insert the entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.ledger import Posting
from gpupool.errors import Conflict, NotFound, PaymentRequired
from gpupool.store.prepared import Prepared
from gpupool.store.tables import accounts, entries, postings


@dataclass(frozen=True, slots=True)
class PostingRecord:
    id: int
    kind: str
    scope: str
    idempotency_key: str | None
    request_hash: str
    source: str | None
    destination: str | None
    amount_micro: int
    actor: str
    memo: str | None
    created_at: float


class NewPosting(NamedTuple):
    """A posting about to be written (a tuple: every task makes two, and a frozen dataclass of ten
    fields costs 6 µs to build)."""

    posting: Posting
    scope: str
    idempotency_key: str | None
    request_hash: str
    source: str | None
    destination: str | None
    amount_micro: int
    actor: str
    created_at: float
    memo: str | None = None


_POSTING_COLUMNS = (
    "kind",
    "scope",
    "idempotency_key",
    "request_hash",
    "source",
    "destination",
    "amount_micro",
    "actor",
    "memo",
    "created_at",
)


def _posting_params(new: NewPosting) -> dict[str, Any]:
    return {
        "kind": new.posting.kind.value,
        "scope": new.scope,
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "source": new.source,
        "destination": new.destination,
        "amount_micro": new.amount_micro,
        "actor": new.actor,
        "memo": new.memo,
        "created_at": new.created_at,
    }


_INSERT_POSTINGS = Prepared.insert(postings, _POSTING_COLUMNS)
# An entry of a posting named by its key: no round trip to learn the ids the postings were given.
_INSERT_LEGS = Prepared(
    insert(entries).from_select(
        ["posting_id", "account", "amount_micro"],
        select(
            postings.c.id, bindparam("account", type_=String), bindparam("amount_micro", type_=BigInteger)
        ).where(postings.c.scope == bindparam("scope"), postings.c.idempotency_key == bindparam("key")),
    )
)


@cache
def _claim_statement(dialect: str) -> Any:
    """Built once per dialect: building a Core statement costs more than running it on SQLite."""
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        make(postings)
        .values({c: bindparam(c) for c in _POSTING_COLUMNS})
        .on_conflict_do_nothing(index_elements=["scope", "idempotency_key"])
        .returning(postings.c.id)
    )


@cache
def _apply_statement(legs: int) -> Any:
    """``balance += CASE id WHEN a0 THEN d0 … END`` for ``legs`` accounts, in one UPDATE."""
    delta = case(
        *[(accounts.c.id == bindparam(f"a{i}"), bindparam(f"d{i}", type_=BigInteger)) for i in range(legs)],
        else_=literal(0, BigInteger),
    )
    return (
        update(accounts)
        .where(accounts.c.id.in_([bindparam(f"w{i}", type_=String) for i in range(legs)]))
        .values(balance_micro=accounts.c.balance_micro + delta)
    )


_INSERT_ENTRIES = insert(entries)

# Batched forms for postings with many legs; PostgreSQL gets arrays (asyncpg sends them binary).
_PG_MOVE = text(
    "UPDATE accounts SET balance_micro = accounts.balance_micro + u.d FROM "
    "unnest(CAST(:ids AS text[]), CAST(:ds AS bigint[])) AS u(id, d) WHERE accounts.id = u.id"
)
_PG_CREDIT_OR_OPEN = text(
    "INSERT INTO accounts (id, type, balance_micro, created_at) "
    "SELECT u.id, CAST(:type AS text), u.d, CAST(:now AS double precision) "
    "FROM unnest(CAST(:ids AS text[]), CAST(:ds AS bigint[])) AS u(id, d) "
    "ON CONFLICT (id) DO UPDATE SET balance_micro = accounts.balance_micro + EXCLUDED.balance_micro"
)
_PG_ENTRIES = text(
    "INSERT INTO entries (posting_id, account, amount_micro) "
    "SELECT CAST(:pid AS bigint), u.a, u.d FROM "
    "unnest(CAST(:ids AS text[]), CAST(:ds AS bigint[])) AS u(a, d)"
)
_SQLITE_MOVE = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"))
    .values(balance_micro=accounts.c.balance_micro + bindparam("b_delta", type_=BigInteger))
)


@cache
def _sqlite_credit_or_open() -> Any:
    stmt = sqlite_insert(accounts)
    return stmt.on_conflict_do_update(
        index_elements=["id"], set_={"balance_micro": accounts.c.balance_micro + stmt.excluded.balance_micro}
    )


class LedgerRepo:
    """Reads and writes of one transaction; the connection's transaction is the caller's."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        dialect = conn.dialect.name
        self._insert = pg_insert if dialect == "postgresql" else sqlite_insert

    async def ensure_account(self, account_id: str, account_type: str, now: float) -> None:
        stmt = self._insert(accounts).values(
            id=account_id, type=account_type, balance_micro=0, created_at=now
        )
        await self.conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))

    async def ensure_accounts(self, account_ids: Sequence[str], account_type: str, now: float) -> None:
        """Create any of ``account_ids`` that do not exist yet, in one statement."""
        if account_ids and self.conn.dialect.name == "postgresql":  # one statement over an array
            await self.conn.execute(
                text(
                    "INSERT INTO accounts (id, type, balance_micro, created_at) "
                    "SELECT u.id, CAST(:type AS text), 0, CAST(:now AS double precision) "
                    "FROM unnest(CAST(:ids AS text[])) AS u(id) ON CONFLICT (id) DO NOTHING"
                ),
                {"ids": list(account_ids), "type": account_type, "now": now},
            )
        elif account_ids:
            stmt = self._insert(accounts).on_conflict_do_nothing(index_elements=["id"])
            await self.conn.execute(
                stmt,
                [{"id": a, "type": account_type, "balance_micro": 0, "created_at": now} for a in account_ids],
            )

    async def apply_many(
        self, posting_id: int, posting: Posting, *, open_as: str | None = None, now: float = 0.0
    ) -> None:
        """``apply`` for postings with thousands of legs (an epoch's payouts): a few batched statements.

        Debited accounts must exist and the accounts' CHECK constraint still refuses a negative balance
        (the whole posting then fails). With ``open_as``, a credited account that does not exist yet is
        opened with that type and its credit as balance in the same statement (an upsert), so an
        epoch's 10^5 owners cost one write each, not an insert and then an update.
        """
        deltas = posting.deltas()
        credits = {a: d for a, d in deltas.items() if d > 0}
        debits = {a: d for a, d in deltas.items() if d < 0}
        pg = self.conn.dialect.name == "postgresql"
        try:
            await self._move(debits, pg)
            if open_as is not None and pg:
                await self.conn.execute(
                    _PG_CREDIT_OR_OPEN,
                    {"ids": list(credits), "ds": list(credits.values()), "type": open_as, "now": now},
                )
            elif open_as is not None:
                await self.conn.execute(
                    _sqlite_credit_or_open(),
                    [
                        {"id": a, "type": open_as, "balance_micro": d, "created_at": now}
                        for a, d in credits.items()
                    ],
                )
            else:
                await self._move(credits, pg)
        except IntegrityError as exc:
            raise PaymentRequired("a payout would overdraw its source", details={}) from exc
        if pg:  # one statement over arrays, not 10^5 round trips
            await self.conn.execute(
                _PG_ENTRIES, {"pid": posting_id, "ids": list(deltas), "ds": list(deltas.values())}
            )
            return
        await self.conn.execute(
            _INSERT_ENTRIES,
            [{"posting_id": posting_id, "account": a, "amount_micro": d} for a, d in deltas.items()],
        )

    async def _move(self, deltas: dict[str, int], pg: bool) -> None:
        """Add ``deltas`` to existing accounts; NotFound when one of them does not exist."""
        if not deltas:
            return
        if pg:
            result = await self.conn.execute(_PG_MOVE, {"ids": list(deltas), "ds": list(deltas.values())})
        else:
            result = await self.conn.execute(
                _SQLITE_MOVE, [{"b_id": a, "b_delta": d} for a, d in deltas.items()]
            )
        if result.rowcount != len(deltas):
            known = set(await self.balances(list(deltas)))
            missing = sorted(set(deltas) - known)
            raise NotFound(f"unknown account: {missing[0]}", details={"account": missing[0]})

    async def account_exists(self, account_id: str) -> bool:
        row = await self.conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
        return row.first() is not None

    async def balances(self, account_ids: Sequence[str]) -> dict[str, int]:
        rows = await self.conn.execute(
            select(accounts.c.id, accounts.c.balance_micro).where(accounts.c.id.in_(account_ids))
        )
        return {r.id: r.balance_micro for r in rows}

    async def find(self, scope: str, idempotency_key: str) -> PostingRecord | None:
        row = (
            await self.conn.execute(
                select(postings).where(
                    and_(postings.c.scope == scope, postings.c.idempotency_key == idempotency_key)
                )
            )
        ).first()
        return PostingRecord(**row._asdict()) if row else None

    async def claim(self, new: NewPosting) -> int | None:
        """Insert the posting row; None when its idempotency key is already taken."""
        posting_id = (
            await self.conn.execute(_claim_statement(self.conn.dialect.name), _posting_params(new))
        ).scalar()
        return None if posting_id is None else int(posting_id)

    async def post_many(self, news: Sequence[NewPosting]) -> None:
        """Many postings of one scope under new keys, in three statements.

        For group commit (``store/batches.py``), so it claims the keys without looking first: a key
        taken already (by an earlier write or twice in the batch) raises Conflict, and the summed
        deltas move each balance once, so the CHECK refuses the whole batch when the sum would
        overdraw an account. Either way nothing is written, and the caller posts them one by one to
        learn which one it was.
        """
        scope = news[0].scope
        keys = [str(n.idempotency_key) for n in news]
        if any(n.idempotency_key is None for n in news) or any(n.scope != scope for n in news):
            raise ValueError("post_many takes keyed postings of one scope")
        if len(set(keys)) != len(keys):
            raise Conflict("a key is used twice in the batch", code="already_settled")
        try:
            await _INSERT_POSTINGS.many(self.conn, [_posting_params(n) for n in news])
        except IntegrityError as exc:
            raise Conflict("a posting in the batch exists already", code="already_settled") from exc
        summed: dict[str, int] = {}
        legs = []
        for key, new in zip(keys, news, strict=True):
            for account, delta in new.posting.deltas().items():
                summed[account] = summed.get(account, 0) + delta
                legs.append({"scope": scope, "key": key, "account": account, "amount_micro": delta})
        try:
            await self._move({a: d for a, d in summed.items() if d}, self.conn.dialect.name == "postgresql")
        except IntegrityError as exc:
            debited = sorted(a for a, d in summed.items() if d < 0)
            if len(debited) == 1:
                raise PaymentRequired(
                    f"insufficient funds in {debited[0]}", details={"account": debited[0]}
                ) from exc
            raise PaymentRequired("a posting in the batch would overdraw its source", details={}) from exc
        await _INSERT_LEGS.many(self.conn, legs)

    async def apply(self, posting_id: int, posting: Posting) -> None:
        """Move balances and record entries; raises PaymentRequired or NotFound and writes nothing."""
        deltas = posting.deltas()
        params: dict[str, object] = {}
        for i, (account, delta) in enumerate(deltas.items()):
            params.update({f"a{i}": account, f"d{i}": delta, f"w{i}": account})
        try:
            result = await self.conn.execute(_apply_statement(len(deltas)), params)
        except IntegrityError as exc:
            debited = next(e.account for e in posting.entries if e.amount_micro < 0)
            raise PaymentRequired(f"insufficient funds in {debited}", details={"account": debited}) from exc
        if result.rowcount != len(deltas):
            known = set(await self.balances(list(deltas)))
            missing = sorted(set(deltas) - known)
            raise NotFound(f"unknown account: {missing[0]}", details={"account": missing[0]})
        await self.conn.execute(
            _INSERT_ENTRIES,
            [{"posting_id": posting_id, "account": a, "amount_micro": d} for a, d in deltas.items()],
        )

    async def list_postings(
        self, account_id: str, *, kind: str | None, limit: int, before_id: int | None
    ) -> list[PostingRecord]:
        cond = or_(postings.c.source == account_id, postings.c.destination == account_id)
        if kind is not None:
            cond = and_(cond, postings.c.kind == kind)
        if before_id is not None:
            cond = and_(cond, postings.c.id < before_id)
        rows = await self.conn.execute(
            select(postings).where(cond).order_by(postings.c.id.desc()).limit(limit)
        )
        return [PostingRecord(**r._asdict()) for r in rows]

    async def trial_balance(self) -> tuple[list[tuple[str, str, int, int]], int]:
        """Each account's (id, type, cached balance, sum of its entries), and the sum of all entries."""
        sums = (
            select(entries.c.account, func.coalesce(func.sum(entries.c.amount_micro), 0).label("total"))
            .group_by(entries.c.account)
            .subquery()
        )
        rows = await self.conn.execute(
            select(accounts.c.id, accounts.c.type, accounts.c.balance_micro, func.coalesce(sums.c.total, 0))
            .select_from(accounts.outerjoin(sums, sums.c.account == accounts.c.id))
            .order_by(accounts.c.id)
        )
        total = (await self.conn.execute(select(func.coalesce(func.sum(entries.c.amount_micro), 0)))).scalar()
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows], int(total or 0)
