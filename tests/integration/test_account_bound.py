"""Account-bound nodes (SPEC §8): admitted on an account's credential, not on a key of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from alembic import command
from sqlalchemy import text

from gpupool import crypto
from gpupool.core.model import Identity
from gpupool.errors import Conflict
from gpupool.hub.account_bound import AccountBinding
from gpupool.hub.live import GpuSpec, NodeSpec
from gpupool.store.db import Database, _alembic_config
from tests.conftest import HubClient
from tests.factories import OTHER_OWNER, OWNER, registration

HubFactory = Callable[..., Awaitable[HubClient]]


def spec(miner_id: str, owner: str = OWNER) -> NodeSpec:
    return NodeSpec(
        pubkey=None,
        owner=owner,
        miner_id=miner_id,
        cpu_cores=8,
        ram_gb=32.0,
        price_micro_per_ksec=750_000,
        max_parallel=2,
        gpus=(GpuSpec(0, "GPU-0", "NVIDIA GeForce RTX 4090", 24.0, "8.9"),),
        addr="http://10.0.0.9:8101",
        region="eu-west",
    )


def alice(owner: str = "user:alice") -> AccountBinding:
    return AccountBinding(owner=owner, identity=Identity.USER_TOKEN, credential="alice")


async def match_ids(client: HubClient) -> list[str]:
    resp = await client.http.post(
        "/v1/match", json={"job_id": "j", "top_k": 10}, headers=await client.admin_headers()
    )
    assert resp.status_code == 200, resp.text
    return [c["miner_id"] for c in resp.json()["candidates"]]


async def test_an_account_bound_node_is_listed_with_its_identity_and_matched(hub_client: HubClient) -> None:
    registration_ = await hub_client.hub.registry.admit_account_bound(alice(), spec("hm-1"))
    assert registration_.status == "online" and registration_.created
    admin = await hub_client.admin_headers()
    view = (await hub_client.http.get("/v1/miners/hm-1", headers=admin)).json()
    assert view["identity"] == "user_token" and view["pubkey"] is None and view["owner"] == "user:alice"
    assert await match_ids(hub_client) == ["hm-1"]
    again = await hub_client.hub.registry.admit_account_bound(alice(), spec("hm-1"))
    assert not again.created and again.session_token != registration_.session_token


async def test_a_signed_node_shows_identity_signed(hub_client: HubClient, clock: object) -> None:
    body = registration(crypto.KeyPair.generate(), hub_client.hub.clock, miner_id="signed-1")
    assert (await hub_client.http.post("/v1/miners/register", json=body)).status_code == 200
    view = (await hub_client.http.get("/v1/miners/signed-1", headers=await hub_client.admin_headers())).json()
    assert view["identity"] == "signed" and view["pubkey"] == body["pubkey"]


async def test_allowlist_mode_keeps_an_account_bound_node_pending_until_an_admin_approves(
    hub_client_factory: HubFactory,
) -> None:
    client = await hub_client_factory(registry_mode="allowlist")
    admission = await client.hub.registry.admit_account_bound(alice(), spec("hm-2"))
    assert admission.status == "pending"
    assert await match_ids(client) == []
    admin = await client.admin_headers()
    pending = (await client.http.get("/v1/miners?status=pending", headers=admin)).json()
    assert [m["miner_id"] for m in pending["items"]] == ["hm-2"]
    resp = await client.http.post("/v1/admin/miners/hm-2/approve", headers=admin)
    assert resp.status_code == 200 and resp.json()["status"] == "online"
    assert await match_ids(client) == ["hm-2"]
    # Approved once is approved: a re-registration does not fall back to pending.
    assert (await client.hub.registry.admit_account_bound(alice(), spec("hm-2"))).status == "online"


async def test_allowlist_mode_admits_an_account_on_the_allowlist(hub_client_factory: HubFactory) -> None:
    client = await hub_client_factory(registry_mode="allowlist")
    admin = await client.admin_headers()
    resp = await client.http.post("/v1/admin/allowlist", json={"entry": "user:alice"}, headers=admin)
    assert resp.status_code == 201 and resp.json()["kind"] == "user"
    assert (await client.hub.registry.admit_account_bound(alice(), spec("hm-3"))).status == "online"


async def test_a_credential_never_takes_another_nodes_id(hub_client: HubClient) -> None:
    body = registration(crypto.KeyPair.generate(), hub_client.hub.clock, miner_id="taken")
    assert (await hub_client.http.post("/v1/miners/register", json=body)).status_code == 200
    with pytest.raises(Conflict):
        await hub_client.hub.registry.admit_account_bound(alice(), spec("taken"))
    await hub_client.hub.registry.admit_account_bound(alice(OWNER), spec("mine"))
    other = AccountBinding(owner=OTHER_OWNER, identity=Identity.API_KEY, credential="k2")
    with pytest.raises(Conflict):
        await hub_client.hub.registry.admit_account_bound(other, spec("mine", OTHER_OWNER))
    # A signed key cannot claim an account-bound node's id either.
    body = registration(crypto.KeyPair.generate(), hub_client.hub.clock, miner_id="mine")
    assert (await hub_client.http.post("/v1/miners/register", json=body)).status_code == 409


async def test_migration_keeps_nodes_sessions_and_names_prices_in_micro(db_url: str) -> None:
    """0009 rebuilds ``miners`` on SQLite (alters it on PostgreSQL); the sessions that reference it
    survive, and a user: account fits the widened owner column."""
    db = Database(db_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0008"))
            await conn.execute(
                text(
                    "INSERT INTO miners (miner_id, pubkey, owner, spec, status, trust, poc_weight, "
                    "registered_at, last_seen) VALUES ('m1', :pk, :owner, :spec, 'online', 0.5, 0, 1, 1)"
                ),
                {"pk": "ab" * 32, "owner": OWNER, "spec": '{"price_token_per_ksec": 250000}'},
            )
            await conn.execute(
                text(
                    "INSERT INTO node_sessions (token_hash, miner_id, expires_at, revoked) "
                    "VALUES ('h', 'm1', 9, :revoked)"
                ),
                {"revoked": False},
            )
        await db.migrate()
        async with db.read() as conn:
            row = (await conn.execute(text("SELECT identity, spec FROM miners"))).one()
            sessions = (await conn.execute(text("SELECT miner_id FROM node_sessions"))).all()
        assert row[0] == "signed" and row[1] == '{"price_micro_per_ksec": 250000}'
        assert [s[0] for s in sessions] == ["m1"]
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO miners (miner_id, pubkey, owner, spec, status, trust, poc_weight, "
                    "registered_at, last_seen, identity) "
                    "VALUES ('m2', NULL, :owner, '{}', 'online', 0.5, 0, 1, 1, 'user_token')"
                ),
                {"owner": "user:" + "a" * 64},
            )
    finally:
        await db.dispose()
