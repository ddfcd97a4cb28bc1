"""A restart storm: hundreds of registrations at once share transactions, and each gets its own answer.

The batched path must answer exactly as one transaction per request would: a forged or stale event,
a replay (of an earlier request, or of one in the same storm), a node id held by another key and a
key the pool does not admit are each refused with their own code, the good ones are registered with
one working session each, and nothing a refused request carried is remembered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import OTHER_OWNER, registration

Factory = Callable[..., Awaitable[HubClient]]
UNLIMITED = {"rate_limit": "1000000/second"}  # every node of a real storm has its own address


async def post_all(http: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return await asyncio.gather(*(http.post("/v1/miners/register", json=b) for b in bodies))


def code(resp: httpx.Response) -> str:
    if resp.status_code == 200:
        return "ok"
    return str(resp.json()["error"]["code"])


def forged(body: dict[str, Any]) -> dict[str, Any]:
    sig = body["sig_event"]["sig"]
    body["sig_event"]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    return body


async def registered_ids(client: HubClient) -> set[str]:
    admin = await client.admin_headers()
    page = (await client.http.get("/v1/miners", params={"page_size": 500}, headers=admin)).json()
    return {m["miner_id"] for m in page["items"]}


async def lease_ok(client: HubClient, token: str) -> bool:
    resp = await client.http.get("/v1/miners/lease/renew", params={"session_token": token})
    return resp.status_code == 200


async def test_a_mixed_storm_gives_each_request_its_own_answer(
    hub_client_factory: Factory, clock: FakeClock
) -> None:
    client = await hub_client_factory(**UNLIMITED)
    known = [crypto.KeyPair.generate() for _ in range(20)]
    before = [registration(k, clock, miner_id=f"known-{i}") for i, k in enumerate(known)]
    assert {code(r) for r in await post_all(client.http, before)} == {"ok"}
    clock.advance(5)

    expected: list[tuple[dict[str, Any], str]] = []
    fresh = [crypto.KeyPair.generate() for _ in range(200)]
    expected += [(registration(k, clock, miner_id=f"new-{i}"), "ok") for i, k in enumerate(fresh)]
    expected += [(registration(k, clock, miner_id=f"known-{i}"), "ok") for i, k in enumerate(known[:10])]
    expected += [(b, "replayed_event") for b in before[10:]]  # replays of requests accepted earlier
    expected += [(forged(registration(crypto.KeyPair.generate(), clock)), "bad_signature") for _ in range(20)]
    stale = [registration(crypto.KeyPair.generate(), clock, age_s=600) for _ in range(20)]
    expected += [(b, "stale_event") for b in stale]
    expected += [  # a new key asking for a node id another key holds
        (registration(crypto.KeyPair.generate(), clock, miner_id=f"known-{i}"), "miner_id_taken")
        for i in range(10, 20)
    ]
    expected += [  # a registered key asking to be another node
        (registration(k, clock, miner_id=f"renamed-{i}"), "miner_id_mismatch")
        for i, k in enumerate(known[10:15], start=10)
    ]
    bodies = [b for b, _ in expected]
    answers = await post_all(client.http, bodies)

    assert [code(r) for r in answers] == [want for _, want in expected]
    batcher = client.hub.registry.enrolments.batcher
    assert batcher.batches < batcher.items  # they did share transactions
    stored = {f"new-{i}" for i in range(200)} | {f"known-{i}" for i in range(20)}
    assert await registered_ids(client) == stored
    tokens = [r.json()["session_token"] for r in answers if r.status_code == 200]
    assert all(await asyncio.gather(*(lease_ok(client, t) for t in tokens[::10])))
    # The same storm again: every event accepted above is a replay now, in whatever batch it lands.
    again = await post_all(client.http, [b for b, want in expected if want == "ok"])
    assert {code(r) for r in again} == {"replayed_event"}


async def test_one_event_twice_in_a_storm_is_accepted_once(
    hub_client_factory: Factory, clock: FakeClock
) -> None:
    client = await hub_client_factory(**UNLIMITED)
    bodies = [registration(crypto.KeyPair.generate(), clock, miner_id=f"twice-{i}") for i in range(50)]
    answers = await post_all(client.http, bodies + bodies)
    for first, second in zip(answers[:50], answers[50:], strict=True):
        assert sorted([code(first), code(second)]) == ["ok", "replayed_event"]
    assert len(await registered_ids(client)) == 50


async def test_a_node_registering_twice_at_once_keeps_one_live_session(
    hub_client_factory: Factory, clock: FakeClock
) -> None:
    client = await hub_client_factory(**UNLIMITED)
    keys = [crypto.KeyPair.generate() for _ in range(30)]
    first = [registration(k, clock, miner_id=f"dup-{i}") for i, k in enumerate(keys)]
    second = [registration(k, clock, miner_id=f"dup-{i}", region="us-east") for i, k in enumerate(keys)]
    answers = await post_all(client.http, first + second)
    assert {code(r) for r in answers} == {"ok"}
    for a, b in zip(answers[:30], answers[30:], strict=True):
        live = [await lease_ok(client, r.json()["session_token"]) for r in (a, b)]
        assert sorted(live) == [False, True]  # a registration revokes the node's older token


async def test_a_refused_registration_claims_nothing(hub_client_factory: Factory, clock: FakeClock) -> None:
    client = await hub_client_factory(registry_mode="allowlist", **UNLIMITED)
    admin = await client.admin_headers()
    resp = await client.http.post("/v1/admin/allowlist", json={"entry": OTHER_OWNER.lower()}, headers=admin)
    assert resp.status_code in (200, 201), resp.text
    listed = [registration(crypto.KeyPair.generate(), clock, owner=OTHER_OWNER) for _ in range(60)]
    unlisted = [registration(crypto.KeyPair.generate(), clock) for _ in range(60)]
    answers = await post_all(client.http, [b for pair in zip(listed, unlisted, strict=True) for b in pair])
    assert [code(r) for r in answers] == ["ok", "not_authorized"] * 60
    # The refused events were not remembered: once admitted, the very same requests go through.
    await client.http.post("/v1/admin/allowlist", json={"entry": unlisted[0]["owner"].lower()}, headers=admin)
    assert {code(r) for r in await post_all(client.http, unlisted)} == {"ok"}


async def test_one_storm_at_two_replicas_accepts_each_event_once(
    hub_client_factory: Factory, clock: FakeClock
) -> None:
    one, two = await hub_client_factory(**UNLIMITED), await hub_client_factory(**UNLIMITED)
    bodies = [registration(crypto.KeyPair.generate(), clock, miner_id=f"both-{i}") for i in range(80)]
    at_one, at_two = await asyncio.gather(post_all(one.http, bodies), post_all(two.http, bodies))
    for a, b in zip(at_one, at_two, strict=True):
        assert sorted([code(a), code(b)]) == ["ok", "replayed_event"]
    assert len(await registered_ids(one)) == 80
