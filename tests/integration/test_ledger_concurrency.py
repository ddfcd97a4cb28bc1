"""2,000 concurrent transfers among 20 accounts: no overdraft, no money made or lost, keys used once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from sqlalchemy import func, select

from gpupool.store.tables import accounts, postings
from tests.conftest import HubClient

N_USERS = 20
N_TRANSFERS = 2_000
START_BALANCE = 1_000_000


async def test_concurrent_transfers_keep_the_books(hub_client: HubClient) -> None:
    rng = random.Random(20261123)
    names = [f"acct{i:02d}" for i in range(N_USERS)]
    headers = {n: await hub_client.make_user(n, balance=START_BALANCE) for n in names}

    requests: list[tuple[str, dict[str, object]]] = []
    for i in range(N_TRANSFERS):
        sender = rng.choice(names)
        if requests and rng.random() < 0.15:
            # Reuse an earlier key of the same sender: same body (a retry) or a different one (a bug).
            earlier = [body for s, body in requests if s == sender]
            if earlier:
                body = dict(rng.choice(earlier))
                if rng.random() < 0.5:
                    body["amount"] = int(body["amount"]) + 1  # type: ignore[call-overload]
                requests.append((sender, body))
                continue
        to = rng.choice([n for n in names if n != sender])
        # Amounts large enough that many senders run dry and overdrafts are attempted concurrently.
        requests.append((sender, {"to": to, "amount": rng.randint(1, 400_000), "idempotency_key": f"k{i}"}))

    sem = asyncio.Semaphore(200)

    async def fire(
        sender: str, body: dict[str, object]
    ) -> tuple[str, dict[str, object], int, dict[str, object]]:
        async with sem:
            resp = await hub_client.http.post("/v1/transfers", json=body, headers=headers[sender])
            return sender, body, resp.status_code, resp.json()

    results = await asyncio.gather(*(fire(s, b) for s, b in requests))

    statuses = Counter(status for _, _, status, _ in results)
    assert set(statuses) <= {200, 201, 402, 409}, statuses
    assert statuses[201] > 100 and statuses[402] > 0  # the test really exercised both paths

    # Every key moved money at most once, and every 2xx answer for a key names that one posting.
    async with hub_client.hub.db.read() as conn:
        per_key = await conn.execute(
            select(postings.c.scope, postings.c.idempotency_key, func.count())
            .where(postings.c.kind == "transfer")
            .group_by(postings.c.scope, postings.c.idempotency_key)
        )
        assert all(count == 1 for _, _, count in per_key)
        balances = dict(
            (
                await conn.execute(
                    select(accounts.c.id, accounts.c.balance_micro).where(accounts.c.type == "user")
                )
            ).all()
        )
    ids_by_key: dict[tuple[str, str], set[int]] = {}
    for sender, body, status, payload in results:
        if status in (200, 201):
            ids_by_key.setdefault((sender, str(body["idempotency_key"])), set()).add(int(payload["id"]))  # type: ignore[call-overload]
    assert all(len(ids) == 1 for ids in ids_by_key.values())

    assert all(balance >= 0 for balance in balances.values()), balances
    assert sum(balances[f"user:{n}"] for n in names) == N_USERS * START_BALANCE

    admin = await hub_client.admin_headers()
    tb = (await hub_client.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()
    assert tb["balanced"] is True
