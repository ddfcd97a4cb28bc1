"""GGB's edge API (seed 004), its requests as its types serialise them (logos-42/GGB
``src/solana/types.rs``: NodeInfo, ComputeContribution, ComputeStats, RewardDistribution,
NodeWalletBalance; serde snake_case, enums as Rust variant names)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import OWNER

HubFactory = Callable[..., Awaitable[HubClient]]
EPOCH = 300


def node_info(node_id: str, now: float) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "owner_address": OWNER,
        "name": "edge-1",
        "device_type": "gpu",
        "registered_at": int(now),
        "last_active_at": int(now),
        "status": "Active",
    }


def contribution(node_id: str, now: float, cid: str = "c-1") -> dict[str, Any]:
    return {
        "id": cid,
        "node_id": node_id,
        "task_id": "t-1",
        "start_timestamp": int(now) - 600,
        "end_timestamp": int(now),
        "duration_seconds": 600,
        "avg_gpu_usage_percent": 87.5,
        "gpu_memory_used_mb": 30_000,
        "avg_cpu_usage_percent": 12.0,
        "memory_used_mb": 8_000,
        "network_upload_mb": 12,
        "network_download_mb": 30,
        "samples_processed": 51_200,
        "batches_processed": 400,
        "compute_score": 1234.0,
    }


async def edge_node(client: HubClient, node_id: str = "edge-node-1") -> dict[str, str]:
    user = await client.make_user("edge")
    key = (await client.http.post("/v1/api-keys", json={"owner": OWNER}, headers=user)).json()["key"]
    headers = {"X-Api-Key": key}
    resp = await client.http.post(
        "/api/nodes/register", json=node_info(node_id, client.hub.clock.now()), headers=headers
    )
    assert resp.status_code == 200 and resp.json()["status"] == "OK", resp.text
    return headers


async def test_nodes_register_heartbeat_list_and_show_in_ggb_shapes(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = await edge_node(hub_client)
    assert (await hub_client.http.post("/api/nodes/heartbeat?node_id=edge-node-1", headers=key)).json() == {
        "status": "OK"
    }
    listed = (await hub_client.http.get("/api/nodes/list?active=true", headers=key)).json()
    assert [n["node_id"] for n in listed] == ["edge-node-1"]
    info = (await hub_client.http.get("/api/nodes/node?node_id=edge-node-1", headers=key)).json()
    assert set(info) == set(node_info("x", 0))  # NodeInfo's fields, no more
    assert info["status"] == "Active" and info["owner_address"] == OWNER and info["device_type"] == "gpu"
    assert isinstance(info["registered_at"], int) and isinstance(info["last_active_at"], int)
    assert (await hub_client.http.get("/api/nodes/list")).status_code == 401
    other = await hub_client.http.post("/api/nodes/heartbeat?node_id=someone-else", headers=key)
    assert other.status_code == 404
    bad = await hub_client.http.post(
        "/api/nodes/heartbeat?node_id=edge-node-1", headers={"X-Api-Key": "gpk_no"}
    )
    assert bad.status_code == 401


async def test_reported_contributions_are_stored_flagged_and_shown_as_compute_stats(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = await edge_node(hub_client)
    body = contribution("edge-node-1", clock.now())
    resp = await hub_client.http.post("/api/contributions/record", json=body, headers=key)
    assert resp.json() == {"status": "OK", "contribution_id": "c-1"}
    assert (await hub_client.http.post("/api/contributions/record", json=body, headers=key)).is_success
    stats = (await hub_client.http.get("/api/contributions/stats?node_id=edge-node-1", headers=key)).json()
    # ComputeStats: u64 seconds and MB as integers, f32 percentages as numbers, u32 count.
    assert stats["node_id"] == "edge-node-1" and stats["contribution_count"] == 1  # the re-send counts once
    assert stats["total_compute_seconds"] == 600 and isinstance(stats["total_compute_seconds"], int)
    assert stats["total_samples_processed"] == 51_200 and stats["total_network_mb"] == 42
    assert stats["total_compute_score"] == 1234.0 and stats["avg_gpu_usage_percent"] == 87.5
    assert stats["avg_cpu_usage_percent"] == 12.0 and stats["reported_count"] == 1
    for field, value in (("avg_gpu_usage_percent", 101), ("duration_seconds", -1), ("compute_score", "x")):
        bad = await hub_client.http.post(
            "/api/contributions/record", json={**body, "id": "c-2", field: value}, headers=key
        )
        assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == field
    forged = await hub_client.http.post(
        "/api/contributions/record", json={**contribution("not-mine", clock.now()), "id": "c-3"}, headers=key
    )
    assert forged.status_code == 404


async def distribute_once(client: HubClient, clock: FakeClock) -> list[dict[str, Any]]:
    key = await edge_node(client)
    resp = await client.http.post(
        "/api/contributions/record", json=contribution("edge-node-1", clock.now()), headers=key
    )
    assert resp.is_success
    clock.advance(EPOCH)
    user = await client.make_user("not-admin")
    listed = [
        {
            "id": "r-1",
            "node_id": "edge-node-1",
            "task_id": "t-1",
            "amount_lamports": 5,
            "distributed_at": 0,
            "transaction_signature": "",
            "status": "Pending",
        }
    ]
    assert (await client.http.post("/api/rewards/distribute", json=listed, headers=user)).status_code == 403
    resp = await client.http.post(
        "/api/rewards/distribute", json=listed, headers=await client.admin_headers()
    )
    assert resp.status_code == 200, resp.text
    out: list[dict[str, Any]] = resp.json()
    return out


async def test_reported_contributions_earn_nothing_by_default(
    hub_client_factory: HubFactory, clock: FakeClock
) -> None:
    client = await hub_client_factory(reward_epoch_sec=EPOCH, reward_auto_distribute=False)
    assert await distribute_once(client, clock) == []
    admin = await client.admin_headers()
    balance = (await client.http.get(f"/api/rewards/balance?address={OWNER}", headers=admin)).json()
    assert balance["total_rewards_distributed_lamports"] == 0


async def test_reported_contributions_earn_when_counted_and_balance_is_in_lamports(
    hub_client_factory: HubFactory, clock: FakeClock
) -> None:
    client = await hub_client_factory(
        reward_epoch_sec=EPOCH,
        reward_auto_distribute=False,
        rewards_count_reported=True,
        base_reward_micro=50_000_000,
        min_settlement_micro=1,
    )
    paid = await distribute_once(client, clock)
    assert len(paid) == 1 and paid[0]["success"] is True and len(paid[0]["transaction_signature"]) == 128
    balance = (
        await client.http.get(f"/api/rewards/balance?address={OWNER}", headers=await client.admin_headers())
    ).json()
    # NodeWalletBalance, every amount in lamports = micro-units, times in integer seconds.
    assert set(balance) == {
        "node_id",
        "wallet_address",
        "sol_balance_lamports",
        "pending_rewards_lamports",
        "total_rewards_distributed_lamports",
        "last_updated_at",
    }
    assert balance["wallet_address"] == OWNER and balance["total_rewards_distributed_lamports"] == 50_000_000
    assert balance["sol_balance_lamports"] == 50_000_000 and isinstance(balance["last_updated_at"], int)


async def test_tasks_add_list_cancel_as_ggb_rows(hub_client: HubClient) -> None:
    user = await hub_client.make_user("trainer", balance=100_000_000)
    body = {
        "task_type": "Training",
        "params": {"command": ["python", "train.py"], "max_price_token_per_ksec": "0.5", "timeout_sec": 600},
        "priority": 1,
    }
    added = (await hub_client.http.post("/api/tasks/add", json=body, headers=user)).json()
    assert added["status"] == "OK" and added["task_id"]
    rows = (await hub_client.http.get("/api/tasks/list", headers=user)).json()
    assert [(r["id"], r["task_type"], r["status"]) for r in rows] == [
        (added["task_id"], "Training", "Pending")
    ]
    assert isinstance(rows[0]["created_at"], int) and rows[0]["params"]["command"] == ["python", "train.py"]
    cancel = await hub_client.http.post(f"/api/tasks/cancel?task_id={added['task_id']}", headers=user)
    assert cancel.json() == {"status": "OK"}
    assert (await hub_client.http.get("/api/tasks/list", headers=user)).json()[0]["status"] == "Cancelled"
    bad = {**body, "params": {**body["params"], "max_price_token_per_ksec": "0.0000001"}}
    resp = await hub_client.http.post("/api/tasks/add", json=bad, headers=user)
    assert resp.status_code == 422
    assert (
        await hub_client.http.post("/api/tasks/add", json={**body, "task_type": "Mining"}, headers=user)
    ).status_code == 422
