"""Contributions from accepted results, epoch payouts by measured usage, receipts anyone can verify."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool import crypto, receipts
from gpupool.cli.app import app
from gpupool.core.ports import FakeClock
from gpupool.errors import SignatureRejected
from gpupool.hub.rewards import RewardService
from tests.conftest import LiveHub
from tests.factories import OTHER_OWNER, OWNER
from tests.simnode import SimNode

THIRD_OWNER = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
EPOCH = 300
EMISSION = 100_000_000


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory(
        reward_epoch_sec=EPOCH, base_reward_micro=EMISSION, min_settlement_micro=1_000_000
    )


async def run_task(hub: LiveHub, user: dict[str, str], node: SimNode, gpu_seconds: float) -> str:
    body = {"command": ["work"], "max_price_micro_per_ksec": 3_000_000, "timeout_sec": 1000}
    task_id = str((await hub.http.post("/v1/tasks", json=body, headers=user)).json()["task_id"])
    assert (await node.command("assign"))["task"]["task_id"] == task_id
    resp = await node.result(task_id, gpu_seconds=gpu_seconds)
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    return task_id


async def test_epoch_pays_owners_by_measured_usage_once_with_verifiable_receipts(
    hub: LiveHub, clock: FakeClock, tmp_path: Path
) -> None:
    user = await hub.make_user("client", balance=100_000_000)
    nodes = [
        SimNode(hub, clock, "n-small", owner=OWNER),
        SimNode(hub, clock, "n-mid", owner=OTHER_OWNER),
        SimNode(hub, clock, "n-big", owner=THIRD_OWNER),
    ]
    for node in nodes:
        await node.connect()
    for node, seconds in zip(nodes, (100.0, 200.0, 300.0), strict=True):
        for other in nodes:
            if other is not node:
                await hub.http.post("/v1/miners/update", json={"session_token": other.token, "queue_len": 1})
        await hub.http.post("/v1/miners/update", json={"session_token": node.token, "queue_len": 0})
        await run_task(hub, user, node, seconds)

    stats = (await hub.http.get("/v1/contributions/stats?node_id=n-big", headers=user)).json()
    assert stats["contribution_count"] == 1 and stats["total_compute_seconds"] == 300.0

    admin = await hub.admin_headers()
    early = await hub.http.post(
        "/v1/rewards/distribute", json={"epoch": int(clock.now()) // EPOCH}, headers=admin
    )
    assert early.status_code == 422  # the epoch is still running
    clock.advance(EPOCH)
    out = (await hub.http.post("/v1/rewards/distribute", headers=admin)).json()
    assert out["already_distributed"] is False and out["emission"] == EMISSION
    paid = {p["owner"]: p["amount"] for p in out["payouts"]}
    assert sum(paid.values()) == EMISSION
    assert paid == {OWNER: 16_666_667, OTHER_OWNER: 33_333_333, THIRD_OWNER: 50_000_000}

    again = (
        await hub.http.post("/v1/rewards/distribute", json={"epoch": out["epoch"]}, headers=admin)
    ).json()
    assert again["already_distributed"] is True and again["payouts"] == []

    hub_key = (await hub.http.get("/v1/health")).json()["hub_pubkey"]
    # One hub signature for the epoch; each payout proves its place under the signed Merkle root.
    assert len({p["transaction_signature"] for p in out["payouts"]}) == 1
    for payout in out["payouts"]:
        checked = receipts.verify_payout_receipt(payout["receipt"], hub_key)
        assert checked["owner"] == payout["owner"] and checked["amount_micro"] == payout["amount"]
        assert checked["merkle_root"] == out["merkle_root"] and checked["epoch"] == out["epoch"]
        assert payout["transaction_signature"] == payout["receipt"]["root_event"]["sig"]
        assert payout["success"] is True

    balance = (await hub.http.get(f"/v1/rewards/balance?address={THIRD_OWNER.lower()}", headers=user)).json()
    assert balance["wallet_address"] == THIRD_OWNER and balance["total_rewards_distributed"] == 50_000_000
    # The owner also earned the task payment itself: 2 tokens/ksec x 300 s.
    assert balance["balance"] == 50_000_000 + 600_000
    assert (await hub.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()["balanced"] is True

    # The same receipts come back later with the balance, and they still verify.
    assert [p["receipt"] for p in balance["payouts"]] == [
        p["receipt"] for p in out["payouts"] if p["owner"] == THIRD_OWNER
    ]
    # Another replica (nothing cached) rebuilds them from the ledger entries and the signed root.
    replica = RewardService(hub.hub.db, clock, hub.hub.rewards.hub_key, hub.hub.rewards.config)
    for payout in out["payouts"]:
        [again_shown] = (await replica.balance(payout["owner"]))["payouts"]
        assert again_shown["receipt"] == payout["receipt"] and again_shown["amount"] == payout["amount"]

    # Offline verification with the CLI, and forged receipts that fail it.
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(out["payouts"][0]))
    result = CliRunner().invoke(app, ["verify-receipt", str(good), "--hub-pubkey", hub_key])
    assert result.exit_code == 0, result.output
    forged_amount = copy.deepcopy(out["payouts"][0]["receipt"])
    forged_amount["payout"]["amount_micro"] = 99_000_000
    forged_proof = copy.deepcopy(out["payouts"][0]["receipt"])
    forged_proof["proof"][0] = "ab" * 32
    forged_root = copy.deepcopy(out["payouts"][0]["receipt"])
    forged_root["root_event"]["content"] = forged_root["root_event"]["content"].replace(
        out["merkle_root"], "cd" * 32
    )
    for forged in (forged_amount, forged_proof, forged_root):
        bad = tmp_path / "forged.json"
        bad.write_text(json.dumps(forged))
        result = CliRunner().invoke(app, ["verify-receipt", str(bad), "--hub-pubkey", hub_key])
        assert result.exit_code == 1 and "does NOT verify" in result.output
    with pytest.raises(SignatureRejected):
        receipts.verify_payout_receipt(out["payouts"][0]["receipt"], crypto.KeyPair.generate().pubkey)
    for node in nodes:
        await node.ws.close()


async def test_small_dues_are_carried_until_they_reach_the_minimum(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory(
        reward_epoch_sec=EPOCH, base_reward_micro=600_000, min_settlement_micro=1_000_000
    )
    user = await hub.make_user("client2", balance=100_000_000)
    node = SimNode(hub, clock, "n-one", owner=OWNER)
    await node.connect()
    await run_task(hub, user, node, 10.0)
    admin = await hub.admin_headers()
    clock.advance(EPOCH)
    first = (await hub.http.post("/v1/rewards/distribute", headers=admin)).json()
    assert first["payouts"] == []
    pending = (await hub.http.get(f"/v1/rewards/balance?address={OWNER}", headers=user)).json()
    assert pending["pending_rewards"] == 600_000
    await run_task(hub, user, node, 10.0)
    clock.advance(EPOCH)
    second = (await hub.http.post("/v1/rewards/distribute", headers=admin)).json()
    assert [(p["owner"], p["amount"]) for p in second["payouts"]] == [(OWNER, 1_200_000)]
    assert (await hub.http.get(f"/v1/rewards/balance?address={OWNER}", headers=user)).json()[
        "pending_rewards"
    ] == 0
    await node.ws.close()


async def test_contributions_cannot_be_claimed_by_nodes_or_users(hub: LiveHub, clock: FakeClock) -> None:
    node = SimNode(hub, clock, "n-claims", owner=OWNER)
    await node.connect()
    body = {"node_id": "n-claims", "compute_score": 10**9, "reason": "I worked hard"}
    as_node = await hub.http.post(
        "/v1/admin/contributions", json=body, headers={"Authorization": f"Bearer {node.token}"}
    )
    assert as_node.status_code == 401
    user = await hub.make_user("mallory", balance=0)
    assert (await hub.http.post("/v1/admin/contributions", json=body, headers=user)).status_code == 403
    admin = await hub.admin_headers()
    ok = await hub.http.post(
        "/v1/admin/contributions", json={**body, "reason": "outage credit #42"}, headers=admin
    )
    assert ok.status_code == 201 and ok.json()["recorded"] is True
    stats = (await hub.http.get("/v1/contributions/stats?node_id=n-claims", headers=admin)).json()
    assert stats["total_compute_score"] == 10**9 and stats["contribution_count"] == 1
    await node.ws.close()


async def test_concurrent_distributions_of_an_epoch_pay_it_once(hub: LiveHub, clock: FakeClock) -> None:
    nodes = [SimNode(hub, clock, f"n-race-{i}", owner=o) for i, o in enumerate((OWNER, OTHER_OWNER))]
    admin = await hub.admin_headers()
    for node, score in zip(nodes, (1_000, 3_000), strict=True):
        await node.connect()
        body = {"node_id": node.miner_id, "compute_score": score, "reason": "race test"}
        assert (await hub.http.post("/v1/admin/contributions", json=body, headers=admin)).status_code == 201
    epoch = int(clock.now()) // EPOCH
    clock.advance(EPOCH)
    results = await asyncio.gather(*(hub.hub.rewards.distribute(epoch) for _ in range(4)))
    assert sorted(r.already_distributed for r in results) == [False, True, True, True]
    [paid] = [r for r in results if not r.already_distributed]
    assert {p.owner: p.amount_micro for p in paid.payouts} == {OWNER: 25_000_000, OTHER_OWNER: 75_000_000}
    user = await hub.make_user("watcher", balance=0)
    for owner, amount in ((OWNER, 25_000_000), (OTHER_OWNER, 75_000_000)):
        shown = (await hub.http.get(f"/v1/rewards/balance?address={owner}", headers=user)).json()
        assert shown["balance"] == shown["total_rewards_distributed"] == amount
        assert len(shown["payouts"]) == 1
    assert (await hub.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()["balanced"] is True
    for node in nodes:
        await node.ws.close()
