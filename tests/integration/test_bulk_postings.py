"""Postings with many legs (an epoch's payouts) go through the batched path on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import ledger
from gpupool.core.ledger import Entry, Posting, PostingKind
from gpupool.errors import NotFound, PaymentRequired
from gpupool.hub.postings import post_in
from gpupool.store.ledger_repo import LedgerRepo
from tests.conftest import HubClient


async def test_many_leg_posting_moves_every_balance_and_stays_balanced(hub_client: HubClient) -> None:
    hub = hub_client.hub
    owners = [f"0x{i:040x}" for i in range(1, 41)]
    legs = tuple(Entry(o, 1000 + i) for i, o in enumerate(owners))
    total = sum(e.amount_micro for e in legs)

    async def pay(conn: AsyncConnection) -> None:
        await LedgerRepo(conn).ensure_accounts(owners, ledger.AccountType.OWNER.value, 0.0)
        await post_in(
            conn,
            Posting(PostingKind.MINT, (Entry(ledger.ISSUANCE, -total), Entry(ledger.REWARD_POOL, total))),
            "fund",
            "t",
            0.0,
        )
        await post_in(
            conn, Posting(PostingKind.REWARD, (Entry(ledger.REWARD_POOL, -total), *legs)), "bulk", "t", 0.0
        )

    await hub.db.run(pay)
    async with hub.db.read() as conn:
        balances = await LedgerRepo(conn).balances([*owners, ledger.REWARD_POOL])
    assert [balances[o] for o in owners] == [1000 + i for i in range(40)] and balances[
        ledger.REWARD_POOL
    ] == 0
    assert (await hub.ledger.trial_balance()).balanced

    async def overdraw(conn: AsyncConnection) -> None:
        await post_in(
            conn, Posting(PostingKind.REWARD, (Entry(ledger.REWARD_POOL, -total), *legs)), "again", "t", 0.0
        )

    with pytest.raises(PaymentRequired):
        await hub.db.run(overdraw)  # the pool is empty now: nothing moves
    async with hub.db.read() as conn:
        assert (await LedgerRepo(conn).balances([owners[0]]))[owners[0]] == 1000


async def test_many_leg_posting_opens_missing_owner_accounts_in_the_same_write(hub_client: HubClient) -> None:
    hub = hub_client.hub
    owners = [f"0x{i:040x}" for i in range(100, 130)]
    existing, fresh = owners[:10], owners[10:]
    legs = tuple(Entry(o, 500 + i) for i, o in enumerate(owners))
    total = sum(e.amount_micro for e in legs)

    async def pay(conn: AsyncConnection, key: str, open_as: str | None) -> None:
        await post_in(
            conn,
            Posting(PostingKind.MINT, (Entry(ledger.ISSUANCE, -total), Entry(ledger.REWARD_POOL, total))),
            f"fund-{key}",
            "t",
            7.0,
        )
        await post_in(
            conn,
            Posting(PostingKind.REWARD, (Entry(ledger.REWARD_POOL, -total), *legs)),
            key,
            "t",
            7.0,
            open_as=open_as,
        )

    async def seed(conn: AsyncConnection) -> None:
        await LedgerRepo(conn).ensure_accounts(existing, ledger.AccountType.OWNER.value, 0.0)

    await hub.db.run(seed)
    # Without open_as a missing account is refused and nothing moves.
    with pytest.raises(NotFound):
        await hub.db.run(lambda conn: pay(conn, "closed", None))
    await hub.db.run(lambda conn: pay(conn, "open", ledger.AccountType.OWNER.value))
    await hub.db.run(lambda conn: pay(conn, "again", ledger.AccountType.OWNER.value))
    async with hub.db.read() as conn:
        balances = await LedgerRepo(conn).balances([*owners, ledger.REWARD_POOL])
        rows, _total = await LedgerRepo(conn).trial_balance()
    assert [balances[o] for o in owners] == [2 * (500 + i) for i in range(30)]
    assert balances[ledger.REWARD_POOL] == 0
    # Opened as owner accounts, each cached balance equal to the sum of its entries.
    assert {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in fresh} == {
        o: ("owner", balances[o], balances[o]) for o in fresh
    }
    assert (await hub.ledger.trial_balance()).balanced
