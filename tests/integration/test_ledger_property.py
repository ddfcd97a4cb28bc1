"""No sequence of postings overdraws or unbalances the books, and every posting that keeps each
balance >= 0 goes through: checked against the store that enforces it (``hub/postings.post``)."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import ledger
from gpupool.errors import IdempotencyConflict, PaymentRequired
from gpupool.hub import postings
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo, NewPosting

USERS = [f"user:u{i}" for i in range(4)]
OWNER = "0x" + "cd" * 20

operation = st.one_of(
    st.tuples(st.just("mint"), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("transfer"), st.sampled_from(USERS), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("hold"), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("settle"), st.sampled_from(USERS), st.integers(0, 100), st.integers(0, 100)),
)


def _posting(op: tuple[object, ...], balances: dict[str, int]) -> ledger.Posting | None:
    match op:
        case ("mint", str(to), int(amount)):
            return ledger.mint(to, amount)
        case ("transfer", str(src), str(dst), int(amount)) if src != dst:
            return ledger.transfer(src, dst, amount)
        case ("hold", str(who), int(amount)):
            return ledger.escrow_hold(who, amount)
        case ("settle", str(who), int(charge_pct), int(fee_pct)):
            held = balances.get(ledger.hold_account(who), 0)
            if held == 0:
                return None
            charge = held * charge_pct // 100
            return ledger.settlement(who, held, OWNER, charge, charge * fee_pct // 100)
    return None


def _model(balances: dict[str, int], posting: ledger.Posting) -> dict[str, int] | None:
    """The rule the store must keep: the balances after ``posting``, None when one would go below 0."""
    after = dict(balances)
    for account, delta in posting.deltas().items():
        after[account] = after.get(account, 0) + delta
        if after[account] < 0 and account != ledger.ISSUANCE:
            return None
    return after


async def _scenario(url: str, ops: list[tuple[object, ...]]) -> None:
    db = Database(url)
    await db.migrate()
    accounts = [*USERS, *(ledger.hold_account(u) for u in USERS), OWNER]

    async def open_all(conn: AsyncConnection) -> None:
        repo = LedgerRepo(conn)
        for account in accounts:
            await repo.ensure_account(account, ledger.account_type(account).value, 0.0)

    await db.run(open_all)
    model: dict[str, int] = {}
    keys = itertools.count()
    try:
        for op in ops:
            posting = _posting(op, model)
            if posting is None:
                continue
            new = postings.new_posting(posting, scope="t", key=f"k{next(keys)}", actor="t", now=0.0)
            expected = _model(model, posting)

            async def write(conn: AsyncConnection, new: NewPosting = new) -> postings.PostResult:
                return await postings.post(conn, new)

            if expected is None:
                try:
                    await db.run(write)
                except PaymentRequired:
                    pass
                else:
                    raise AssertionError(f"an overdraft went through: {op}")
                continue
            first = await db.run(write)  # a posting the rule allows must go through
            assert not first.replayed
            again = await db.run(write)  # and the same request again moves nothing
            assert again.replayed and again.record.id == first.record.id
            model = expected
        async with db.read() as conn:
            stored = await LedgerRepo(conn).balances([*accounts, ledger.ISSUANCE, ledger.FEES])
            rows, total = await LedgerRepo(conn).trial_balance()
        assert {a: b for a, b in stored.items() if b} == {a: b for a, b in model.items() if b}
        assert total == 0 and all(cached == summed for _, _, cached, summed in rows)
    finally:
        await db.dispose()


@settings(max_examples=25, deadline=None)
@given(st.lists(operation, max_size=25))
def test_the_store_takes_every_posting_the_rule_allows_and_refuses_every_overdraft(
    ops: list[tuple[object, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_scenario(f"sqlite:///{Path(tmp) / 'ledger.db'}", ops))


def test_a_key_reused_for_another_request_is_a_conflict_on_the_one_path(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(f"sqlite:///{tmp_path / 'l.db'}")
        await db.migrate()

        async def work(conn: AsyncConnection) -> None:
            await LedgerRepo(conn).ensure_account("user:u0", "user", 0.0)
            mint = postings.new_posting(ledger.mint("user:u0", 5), scope="t", key="k", actor="t", now=0.0)
            other = postings.new_posting(ledger.mint("user:u0", 6), scope="t", key="k", actor="t", now=0.0)
            assert not (await postings.post(conn, mint)).replayed
            assert (await postings.post(conn, mint)).replayed
            try:
                await postings.post(conn, other)
            except IdempotencyConflict:
                return
            raise AssertionError("a different request under a used key went through")

        try:
            await db.run(work)
        finally:
            await db.dispose()

    asyncio.run(scenario())
