"""Tasks through the real hub: escrow, dispatch over the node's socket, output, result, settlement.

The node here is the test itself speaking the node protocol (signed registration, heartbeat socket,
session-token reports, signed result), so every hub rule can be driven and checked step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import tarfile
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gpupool import crypto
from gpupool.core.ports import FakeClock
from gpupool.heartbeat_protocol import BATCH_SUBPROTOCOL, MAX_BATCH
from tests.conftest import LiveHub
from tests.factories import OWNER
from tests.simnode import SimNode

CAP = 3_000_000


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


async def submit(hub: LiveHub, user: dict[str, str], **over: Any) -> httpx.Response:
    body = {"command": ["echo", "hi"], "max_price_micro_per_ksec": CAP, "timeout_sec": 1000, **over}
    return await hub.http.post("/v1/tasks", json=body, headers=user)


async def balances(hub: LiveHub, *accounts: str) -> list[tuple[int, int]]:
    admin = await hub.admin_headers()
    out = []
    for account in accounts:
        b = (await hub.http.get(f"/v1/admin/accounts/{account}", headers=admin)).json()
        out.append((b["available"], b["held"]))
    return out


async def books_balance(hub: LiveHub) -> bool:
    """Whether the ledger's trial balance, as an admin reads it, says the books balance."""
    admin = await hub.admin_headers()
    balanced: bool = (await hub.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()["balanced"]
    return balanced


async def test_submit_run_stream_settle_exactly_once(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("alice", balance=10_000_000)
    node = SimNode(hub, clock, "gpu-1")
    await node.connect()

    resp = await submit(hub, user)
    assert resp.status_code == 201, resp.text
    task_id, hold = resp.json()["task_id"], resp.json()["hold"]
    assert hold == CAP  # 3 tokens/ksec x 1000 s x 1 GPU
    assert await balances(hub, "user:alice") == [(10_000_000 - hold, hold)]

    assign = await node.command("assign")
    assert assign["task"]["task_id"] == task_id and assign["task"]["command"] == ["echo", "hi"]
    for seq, text in enumerate(["hello\n", "world\n"]):
        assert (await node.output(task_id, seq, text)).json()["stored"] is True
    assert (await node.output(task_id, 1, "world\n")).json()["stored"] is False  # re-sent after a reconnect
    status = (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()
    assert status["status"] == "running" and status["miner_id"] == "gpu-1"

    done = await node.result(task_id, gpu_seconds=500.0)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["cost"] == 1_000_000  # 2/ksec x 500 s
    again = await node.result(
        task_id, gpu_seconds=900.0
    )  # re-sent (or forged-bigger) result: no second charge
    assert again.status_code == 200 and again.json()["cost"] == 1_000_000
    (alice,), owner = await balances(hub, "user:alice"), (await balances(hub, OWNER))[0]
    assert alice == (10_000_000 - 1_000_000, 0) and owner == (1_000_000, 0)
    assert await books_balance(hub)

    # The output, as Server-Sent Events, resumable from a sequence number.
    async with hub.http.stream("GET", f"/v1/tasks/{task_id}/output?from=0", headers=user) as stream:
        text = "".join([chunk async for chunk in stream.aiter_text()])
    assert 'id: 0\nevent: stdout\ndata: "hello\\n"' in text and "id: 1\n" in text and "event: end" in text
    async with hub.http.stream(
        "GET", f"/v1/tasks/{task_id}/output", headers={**user, "Last-Event-ID": "0"}
    ) as s:
        resumed = "".join([chunk async for chunk in s.aiter_text()])
    assert "id: 0\n" not in resumed and "id: 1\n" in resumed
    result = (await hub.http.get(f"/v1/tasks/{task_id}/result", headers=user)).json()
    assert result["exit_code"] == 0 and result["artifacts"][0]["path"] == "out.txt"
    await node.ws.close()


async def test_insufficient_balance_is_402_and_holds_nothing(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("poor", balance=1_000)
    resp = await submit(hub, user)
    assert resp.status_code == 402
    assert await balances(hub, "user:poor") == [(1_000, 0)]
    assert (await hub.http.get("/v1/tasks", headers=user)).json() == []


async def test_bad_submissions_are_refused(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("bob", balance=10_000_000)
    for bad, field in (
        ({"command": []}, "command"),
        ({"max_price_micro_per_ksec": 0}, "max_price_micro_per_ksec"),
        (
            {"max_price_micro_per_ksec": None, "max_price_token_per_ksec": "0.0000001"},
            "max_price_token_per_ksec",
        ),
        ({"max_price_micro_per_ksec": None, "max_price_token_per_ksec": -1}, "max_price_token_per_ksec"),
        ({"max_price_micro_per_ksec": None}, "max_price_token_per_ksec"),
        ({"max_price_token_per_ksec": "2"}, "max_price_token_per_ksec"),  # disagrees with its twin (3)
        ({"timeout_sec": -1}, "timeout_sec"),
        ({"max_attempts": 0}, "max_attempts"),
    ):
        resp = await submit(hub, user, **bad)
        assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == field


async def test_other_users_task_is_404(hub: LiveHub, clock: FakeClock) -> None:
    alice = await hub.make_user("alice2", balance=10_000_000)
    eve = await hub.make_user("eve", balance=10_000_000)
    task_id = (await submit(hub, alice)).json()["task_id"]
    for path in ("", "/result", "/output"):
        assert (await hub.http.get(f"/v1/tasks/{task_id}{path}", headers=eve)).status_code == 404
    assert (await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=eve)).status_code == 404
    assert (await hub.http.get("/v1/tasks", headers=eve)).json() == []


async def test_stop_a_queued_task_refunds_everything(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("carol", balance=10_000_000)
    task_id = (await submit(hub, user)).json()["task_id"]  # no node online: it stays queued
    stopped = (await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=user)).json()
    assert stopped["status"] == "stopped" and stopped["cost"] == 0
    assert await balances(hub, "user:carol") == [(10_000_000, 0)]


async def test_a_node_cannot_report_for_a_task_it_does_not_hold(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("dave", balance=10_000_000)
    runner, other = SimNode(hub, clock, "runner"), SimNode(hub, clock, "other", region="us-east")
    await runner.connect()
    task_id = (await submit(hub, user, requirements={"region": "eu-west"})).json()["task_id"]
    await runner.command("assign")
    await other.connect()
    assert (await other.output(task_id, 0, "fake")).status_code == 403
    forged = await runner.result(task_id, key=other.key)  # signed by another node's key
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "pubkey_mismatch"
    assert (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()["status"] == "assigned"
    await runner.ws.close()
    await other.ws.close()


async def test_node_lost_mid_task_requeues_to_another_node_and_charges_once(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("erin", balance=10_000_000)
    first = SimNode(hub, clock, "first")
    await first.connect()
    task_id = (await submit(hub, user, max_attempts=2)).json()["task_id"]
    await first.command("assign")
    await first.output(task_id, 0, "partial\n")
    await first.ws.close()  # the node dies
    second = SimNode(hub, clock, "second")
    await second.connect()
    clock.advance(31)  # past the grace period for "first"; "second" keeps beating
    await second.beat()
    await asyncio.sleep(0.1)
    await hub.hub.expire()  # the hub's own expiry tick may have got there first: either way it is out
    assert not hub.hub.live.nodes["first"].online
    assign = await second.command("assign")
    assert assign["task"]["task_id"] == task_id
    done = await second.result(task_id, gpu_seconds=100.0)
    assert done.json()["status"] == "succeeded" and done.json()["miner_id"] == "second"
    assert done.json()["attempts"] == 2 and done.json()["cost"] == 200_000
    assert (await balances(hub, "user:erin"))[0] == (10_000_000 - 200_000, 0)
    await second.ws.close()


async def test_node_lost_on_the_last_attempt_fails_and_refunds(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("frank", balance=10_000_000)
    node = SimNode(hub, clock, "fragile")
    await node.connect()
    task_id = (await submit(hub, user, max_attempts=1)).json()["task_id"]
    await node.command("assign")
    await node.ws.close()
    clock.advance(31)
    await hub.hub.expire()
    status = (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()
    assert status["status"] == "failed" and status["outcome"] == "node_failed" and status["cost"] == 0
    assert await balances(hub, "user:frank") == [(10_000_000, 0)]


async def test_bundle_upload_node_download_and_artifacts(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("grace", balance=10_000_000)
    node, stranger = SimNode(hub, clock, "files-node"), SimNode(hub, clock, "stranger", region="us-east")
    await node.connect()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = b"print('from the bundle')\n"
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    spec = {
        "command": ["python", "main.py"],
        "max_price_micro_per_ksec": CAP,
        "timeout_sec": 1000,
        "requirements": {"region": "eu-west"},
    }
    resp = await hub.http.post(
        "/v1/tasks",
        files={"bundle": ("bundle.tar.gz", archive.getvalue(), "application/gzip")},
        data={"spec": json.dumps(spec)},
        headers=user,
    )
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["task_id"]
    assign = await node.command("assign")
    assert assign["task"]["bundle"] is True
    got = await hub.http.get(f"/v1/tasks/{task_id}/bundle", headers={"X-Session-Token": node.token})
    assert got.status_code == 200 and got.content == archive.getvalue()
    await stranger.connect()
    theirs = await hub.http.get(f"/v1/tasks/{task_id}/bundle", headers={"X-Session-Token": stranger.token})
    assert theirs.status_code == 403

    bad = await node.upload(task_id, "lie.txt", b"abc", hashlib.sha256(b"xyz").hexdigest())
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "X-Content-SHA256"
    escape = await node.upload(task_id, "../../etc/evil", b"abc", hashlib.sha256(b"abc").hexdigest())
    assert escape.status_code in (404, 422)
    done = await node.result(task_id, files={"vectors.npy": b"\x93NUMPY" + b"0" * 100, "log/run.txt": b"ok"})
    assert done.status_code == 200
    result = (await hub.http.get(f"/v1/tasks/{task_id}/result", headers=user)).json()
    assert sorted(a["path"] for a in result["artifacts"]) == ["log/run.txt", "vectors.npy"]
    file = await hub.http.get(f"/v1/tasks/{task_id}/artifacts/log/run.txt", headers=user)
    assert file.status_code == 200 and file.content == b"ok"
    eve = await hub.make_user("eve2")
    assert (await hub.http.get(f"/v1/tasks/{task_id}/artifacts/log/run.txt", headers=eve)).status_code == 404
    assert (await hub.http.get(f"/v1/tasks/{task_id}/artifacts/lie.txt", headers=user)).status_code == 404
    await node.ws.close()
    await stranger.ws.close()


async def test_oversized_bundle_is_413_and_holds_nothing(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory(max_bundle_bytes=10_000)
    user = await hub.make_user("heidi", balance=10_000_000)
    spec = {"command": ["x"], "max_price_micro_per_ksec": CAP, "timeout_sec": 1000}
    resp = await hub.http.post(
        "/v1/tasks",
        files={"bundle": ("b.tar.gz", b"0" * 50_000, "application/gzip")},
        data={"spec": json.dumps(spec)},
        headers=user,
    )
    assert resp.status_code == 413
    assert await balances(hub, "user:heidi") == [(10_000_000, 0)]
    bad_spec = await hub.http.post(
        "/v1/tasks", files={"bundle": ("b", b"x")}, data={"spec": '{"command": []}'}, headers=user
    )
    assert bad_spec.status_code == 422 and "command" in bad_spec.json()["error"]["details"]["field"]


async def test_results_on_the_heartbeat_socket_settle_once_and_are_refused_as_over_http(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("sock", balance=10_000_000)
    node, other = SimNode(hub, clock, "sock-1", max_parallel=2), SimNode(hub, clock, "sock-2")
    await node.connect()
    first, second = [(await submit(hub, user)).json()["task_id"] for _ in range(2)]
    assert {(await node.command("assign"))["task"]["task_id"] for _ in range(2)} == {first, second}

    ack = await node.result_on_socket(first, gpu_seconds=500.0)
    assert ack == {
        "type": "result_ack",
        "task_id": first,
        "status": 200,
        "state": "succeeded",
        "cost": 1_000_000,
    }
    again = await node.result_on_socket(first, gpu_seconds=900.0)  # re-sent, or forged bigger: paid once
    assert again["status"] == 200 and again["cost"] == 1_000_000
    await other.connect()
    forged = await node.result_on_socket(second, key=other.key)
    assert forged["status"] == 401 and forged["code"] == "pubkey_mismatch"
    await node.ws.send(json.dumps({"type": "result", "result": "not a signed event"}))
    assert (await node.command("result_ack"))["status"] == 422
    assert (await hub.http.get(f"/v1/tasks/{second}", headers=user)).json()["status"] == "assigned"
    await node.beat()  # the socket still carries heartbeats
    assert (await node.command("ack"))["type"] == "ack"

    assert await balances(hub, "user:sock") == [(10_000_000 - CAP - 1_000_000, CAP)]
    assert await books_balance(hub)
    await node.ws.close()
    await other.ws.close()


async def three_queued(hub: LiveHub, username: str) -> tuple[dict[str, str], list[str]]:
    """A funded user with three tasks queued in one batch, before any node is there to take them."""
    user = await hub.make_user(username, balance=10_000_000)
    body = {"command": ["echo", "hi"], "max_price_micro_per_ksec": CAP, "timeout_sec": 1000}
    resp = await hub.http.post("/v1/tasks/batch", json={"tasks": [body] * 3}, headers=user)
    return user, [t["task_id"] for t in resp.json()["tasks"]]


async def test_a_node_that_batches_gets_commands_and_acks_in_envelopes_each_answered_on_its_own(
    hub: LiveHub, clock: FakeClock
) -> None:
    user, ids = await three_queued(hub, "env")
    node = SimNode(hub, clock, "env-1", batching=True, max_parallel=4)
    other = SimNode(hub, clock, "env-2")
    await node.connect()  # the three queued tasks go to it in one dispatch round: one frame
    assert node.ws.subprotocol == BATCH_SUBPROTOCOL
    frame = await node.command("batch")
    assert [m["type"] for m in frame["messages"]] == ["assign"] * 3
    assert {m["task"]["task_id"] for m in frame["messages"]} == set(ids)

    await other.connect()
    first, second, third = ids
    signed = await node.signed_result(first, gpu_seconds=500.0)
    results = [
        {"type": "result", "result": signed},
        {"type": "result", "result": await node.signed_result(second, key=other.key)},  # forged
        {"type": "result", "result": "not a signed event"},
        {"type": "result", "result": signed},  # the same result twice in one envelope: paid once
    ]
    await node.ws.send(json.dumps({"type": "batch", "messages": results}))
    acks = (await node.command("batch"))["messages"]
    assert [(a["type"], a.get("task_id"), a["status"]) for a in acks] == [  # no task_id: none readable
        ("result_ack", first, 200),
        ("result_ack", second, 401),
        ("result_ack", None, 422),
        ("result_ack", first, 200),
    ]
    assert acks[0]["cost"] == acks[3]["cost"] == 1_000_000 and acks[1]["code"] == "pubkey_mismatch"
    for task_id, state in [(second, "assigned"), (third, "assigned")]:
        assert (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()["status"] == state
    assert await balances(hub, "user:env") == [(10_000_000 - 2 * CAP - 1_000_000, 2 * CAP)]

    # An envelope past the bound is refused whole; the socket goes on.
    await node.ws.send(json.dumps({"type": "batch", "messages": [{}] * (MAX_BATCH + 1)}))
    assert (await node.command("error"))["code"] == "invalid_input"
    # A node that did not negotiate the extension cannot send envelopes: it is not a heartbeat.
    await other.ws.send(json.dumps({"type": "batch", "messages": results[:1]}))
    assert (await other.command("error"))["code"] == "invalid_input"
    await node.beat()
    assert (await node.command("ack"))["type"] == "ack"
    assert await books_balance(hub)
    await node.ws.close()
    await other.ws.close()


async def test_a_node_without_the_extension_gets_one_frame_per_command(
    hub: LiveHub, clock: FakeClock
) -> None:
    _user, queued = await three_queued(hub, "plain")
    ids = set(queued)
    node = SimNode(hub, clock, "plain-1", max_parallel=4)
    await node.connect()
    assert node.ws.subprotocol is None
    assert {(await node.command("assign"))["task"]["task_id"] for _ in ids} == ids
    await node.ws.close()


async def test_a_batch_submit_holds_each_task_and_refuses_only_those_past_the_balance(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("sweep", balance=5 * CAP)  # enough for 5 of its 8 tasks
    body = {"command": ["echo", "hi"], "max_price_micro_per_ksec": CAP, "timeout_sec": 1000}
    resp = await hub.http.post("/v1/tasks/batch", json={"tasks": [body] * 8}, headers=user)
    assert resp.status_code == 200, resp.text
    items = resp.json()["tasks"]
    assert [i["hold"] for i in items[:5]] == [CAP] * 5 and all(i["error"] is None for i in items[:5])
    assert [i["error"]["code"] for i in items[5:]] == ["insufficient_funds"] * 3
    assert await balances(hub, "user:sweep") == [(0, 5 * CAP)]
    listed = (await hub.http.get("/v1/tasks", params={"status": "queued"}, headers=user)).json()
    assert sorted(t["task_id"] for t in listed) == sorted(i["task_id"] for i in items[:5])
    for bad in ({"tasks": []}, {"tasks": [{**body, "command": []}]}, {"tasks": [body] * 1001}):
        assert (await hub.http.post("/v1/tasks/batch", json=bad, headers=user)).status_code == 422
    assert await balances(hub, "user:sweep") == [(0, 5 * CAP)]


async def test_concurrent_submits_and_results_batch_without_losing_a_micro_unit(
    hub: LiveHub, clock: FakeClock
) -> None:
    """Many writes share a transaction: an overdraft in the crowd is refused to its own caller only."""
    rich = await hub.make_user("rich", balance=100 * CAP)
    poor = await hub.make_user("poorish", balance=5 * CAP)  # enough for 5 of its 8 tasks
    nodes = [SimNode(hub, clock, f"batch-{i}", max_parallel=20) for i in range(3)]
    for node in nodes:
        await node.connect()

    answers = await asyncio.gather(*(submit(hub, who) for who in [rich] * 30 + [poor] * 8))
    rich_ids = [r.json()["task_id"] for r in answers[:30] if r.status_code == 201]
    poor_codes = sorted(r.status_code for r in answers[30:])
    assert len(rich_ids) == 30 and poor_codes == [201] * 5 + [402] * 3
    assert await balances(hub, "user:poorish") == [(0, 5 * CAP)]

    async def run_all(node: SimNode) -> list[dict[str, Any]]:
        held = []
        with contextlib.suppress(TimeoutError):
            while True:
                held.append((await node.command("assign", timeout_s=1.0))["task"]["task_id"])
        signed = [await node.signed_result(t, gpu_seconds=100.0) for t in held]
        for body in signed:  # all sent before any answer is read: they settle side by side
            await node.ws.send(json.dumps({"type": "result", "result": body}))
        return [await node.command("result_ack") for _ in signed]

    acks = [a for per_node in await asyncio.gather(*(run_all(n) for n in nodes)) for a in per_node]
    assert len(acks) == 35 and all(a["status"] == 200 and a["cost"] == 200_000 for a in acks)
    assert await balances(hub, "user:rich", "user:poorish") == [
        (100 * CAP - 30 * 200_000, 0),
        (5 * CAP - 5 * 200_000, 0),
    ]
    assert (await balances(hub, OWNER))[0] == (35 * 200_000, 0)
    assert await books_balance(hub)
    for node in nodes:
        await node.ws.close()


async def test_reports_racing_in_one_batch_are_settled_once_each(hub: LiveHub, clock: FakeClock) -> None:
    """A crowd of results where some tasks are reported twice (re-sent as is, or signed again with
    a bigger bill): the batch falls back to settling each report alone, and each task is paid once."""
    user = await hub.make_user("racer", balance=100 * CAP)
    node = SimNode(hub, clock, "race-1", max_parallel=12)
    await node.connect()
    ids = [(await submit(hub, user)).json()["task_id"] for _ in range(12)]
    assert {(await node.command("assign"))["task"]["task_id"] for _ in ids} == set(ids)

    first = [await node.signed_result(t, gpu_seconds=100.0, files={}) for t in ids]
    bigger = [await node.signed_result(t, gpu_seconds=900.0, files={}) for t in ids[:3]]
    crowd = first + first[3:6] + bigger  # 12 reports, 3 re-sent as they were, 3 signed again
    for body in crowd:  # all on the wire before any answer is read: they meet in one batch
        await node.ws.send(json.dumps({"type": "result", "result": body}))
    acks = [await node.command("result_ack") for _ in crowd]

    replays = [a for a in acks if a["status"] != 200]
    assert all(a["code"] == "replayed_event" for a in replays)  # a re-sent event is refused or
    settled = {a["task_id"]: a["cost"] for a in acks if a["status"] == 200}  # answered as settled
    assert set(settled) == set(ids) and set(settled.values()) == {200_000}
    assert all(a["cost"] == 200_000 for a in acks if a["status"] == 200)
    assert await balances(hub, "user:racer") == [(100 * CAP - 12 * 200_000, 0)]
    assert (await balances(hub, OWNER))[0] == (12 * 200_000, 0)
    assert await books_balance(hub)
    await node.ws.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"usage": {"gpu_seconds": "500"}},
        {"usage": {"duration_sec": float("inf")}},
        {"usage": {"cpu_seconds": -1}},
        {"usage": [1, 2]},
        {"exit_code": "0"},
        {"exit_code": 1.5},
    ],
)
async def test_a_result_with_figures_that_are_not_numbers_is_refused_and_settles_nothing(
    hub: LiveHub, clock: FakeClock, bad: dict[str, Any]
) -> None:
    user = await hub.make_user("figures", balance=10_000_000)
    node = SimNode(hub, clock, "fig-1")
    await node.connect()
    task_id = (await submit(hub, user)).json()["task_id"]
    assert (await node.command("assign"))["task"]["task_id"] == task_id

    body = {"task_id": task_id, "exit_code": 0, "status": "succeeded", "usage": {}, "artifacts": [], **bad}
    signed = crypto.sign_body(node.key, crypto.KIND_TASK_RESULT, body, created_at=int(clock.now()))
    await node.ws.send(json.dumps({"type": "result", "result": signed}))
    ack = await node.command("result_ack")
    assert ack["status"] == 422 and ack["code"] == "invalid_input"
    assert (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()["status"] == "assigned"

    assert (await node.result_on_socket(task_id, gpu_seconds=500.0))["cost"] == 1_000_000  # then a good one
    assert await books_balance(hub)
    await node.ws.close()
