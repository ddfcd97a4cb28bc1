"""HiveMind's workers on a real hub, step by step on the test's clock: admission on a user's token, the
addresses the hub will dial, the token-less refresh, dispatch by dialing, uploads with the user's token,
billing from the hub's clock; signed nodes beside them as before."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from gpupool.core.ports import FakeClock
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from gpupool.rpc.services import hub_task_id
from tests.conftest import LiveHub, free_port
from tests.integration.test_grpc_api import Stubs, grpc_port, refused
from tests.integration.test_tasks_api import balances, books_balance
from tests.simnode import SimNode

PRICE = 1_000_000  # the hub's default price of a dialed worker and cap of a HiveMind upload (per ksec)


class FakeWorker(pb_grpc.WorkerNodeServiceServicer):
    """The worker's side the hub calls, on its own port; it records the calls and answers as told."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[tuple[str, Any]] = []
        self.accept = True
        self.on_stop: Callable[[], Awaitable[object]] | None = None
        self.called = asyncio.Event()
        self.server = grpc.aio.server()
        pb_grpc.add_WorkerNodeServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    async def ExecuteTask(self, request: pb.ExecuteTaskRequest, context: Any) -> pb.ExecuteTaskResponse:
        self.calls.append(("ExecuteTask", request))
        self.called.set()
        return pb.ExecuteTaskResponse(success=self.accept, message="ok" if self.accept else "资源不足")

    async def StopTaskExecution(
        self, request: pb.StopTaskExecutionRequest, context: Any
    ) -> pb.StopTaskExecutionResponse:
        self.calls.append(("StopTaskExecution", request))
        self.called.set()
        if self.on_stop is not None:  # what the worker does before it answers
            await self.on_stop()
        return pb.StopTaskExecutionResponse(success=True, message="stopped")

    async def next_call(self) -> tuple[str, Any]:
        await asyncio.wait_for(self.called.wait(), 10)
        self.called.clear()
        return self.calls[-1]


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory(grpc_enabled=True, grpc_port=0)


@pytest.fixture
async def rpc(hub: LiveHub) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        yield Stubs(channel)


@pytest.fixture
async def worker() -> AsyncIterator[FakeWorker]:
    fake = FakeWorker()
    await fake.server.start()
    try:
        yield fake
    finally:
        await fake.server.stop(0)


def register_request(port: int = 0, **over: Any) -> pb.RegisterWorkerNodeRequest:
    fields: dict[str, Any] = {
        "node_id": "bob",
        "hostname": "127.0.0.1",
        "cpu_cores": 8,
        "memory_gb": 16,
        "cpu_score": 100,
        "gpu_score": 0,
        "gpu_memory_gb": 0,
        "gpu_name": "Not Available",
        "location": "Unknown",
        "port": port,
        "docker_status": "unavailable",
        **over,
    }
    return pb.RegisterWorkerNodeRequest(**fields)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def admitted(rpc: Stubs, token: str, port: int, **over: Any) -> str:
    answer = await rpc.nodes.RegisterWorkerNode(register_request(port, **over), metadata=bearer(token))
    assert answer.success, answer.message
    return str(answer.miner_id)


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


async def upload(rpc: Stubs, token: str, task_id: str, **over: Any) -> None:
    fields: dict[str, Any] = {"task_zip": zipped({"run.sh": b"echo hi\n"}), "memory_gb": 2, "location": "Any"}
    answer = await rpc.master.UploadTask(
        pb.UploadTaskRequest(task_id=task_id, token=token, **{**fields, **over})
    )
    assert answer.success


# -- admission --------------------------------------------------------------------------------------


async def test_a_worker_is_admitted_as_a_node_of_the_user_whose_token_it_brings(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker
) -> None:
    await hub.make_user("bob")
    miner_id = await admitted(rpc, await rpc.token("bob"), worker.port)
    view = (await hub.http.get(f"/v1/miners/{miner_id}", headers=await hub.admin_headers())).json()
    assert (view["identity"], view["owner"], view["pubkey"], view["status"]) == (
        "user_token",
        "user:bob",
        None,
        "online",
    )
    code, _, error = await refused(
        rpc.nodes.RegisterWorkerNode(register_request(worker.port), metadata=bearer("x.y.z"))
    )
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_token")


@pytest.mark.parametrize(
    ("over", "status", "error"),
    [
        ({"hostname": "10.1.2.3"}, grpc.StatusCode.PERMISSION_DENIED, "dial_address_refused"),
        ({"hostname": "169.254.169.254"}, grpc.StatusCode.PERMISSION_DENIED, "dial_address_refused"),
        ({"hostname": "worker.example"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
        ({"port": 0}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
        ({"port": 70000}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
        ({"memory_gb": -1}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
        ({"location": "x" * 129}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ],
)
async def test_the_hub_dials_no_address_but_the_workers_own(
    hub: LiveHub, rpc: Stubs, over: dict[str, Any], status: grpc.StatusCode, error: str
) -> None:
    """Else anyone with an account could make the hub call a third party (or the cloud's metadata)."""
    await hub.make_user("bob")
    code, _, found = await refused(
        rpc.nodes.RegisterWorkerNode(
            register_request(**{"port": free_port(), **over}), metadata=bearer(await rpc.token("bob"))
        )
    )
    assert (code, found) == (status, error)
    assert hub.hub.live.nodes == {}


async def test_addresses_inside_the_configured_networks_are_dialed(
    live_hub_factory: Callable[..., Awaitable[LiveHub]],
) -> None:
    hub = await live_hub_factory(grpc_enabled=True, grpc_port=0, worker_dial_cidrs=["10.0.0.0/8"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        rpc = Stubs(channel)
        await hub.make_user("bob")
        miner_id = await admitted(rpc, await rpc.token("bob"), 50052, hostname="10.1.2.3")
        assert hub.hub.live.nodes[miner_id].record.spec["addr"] == "10.1.2.3:50052"
        code, _, _ = await refused(
            rpc.nodes.RegisterWorkerNode(
                register_request(50052, hostname="192.168.1.9"), metadata=bearer(await rpc.token("bob"))
            )
        )
        assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_the_tokenless_refresh_renews_only_a_worker_that_user_registered_there(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker, clock: FakeClock
) -> None:
    await hub.make_user("bob")
    await hub.make_user("mallory")
    code, _, error = await refused(rpc.nodes.RegisterWorkerNode(register_request(worker.port)))
    assert (code, error) == (grpc.StatusCode.NOT_FOUND, "not_registered")  # it creates nothing
    assert hub.hub.live.nodes == {}

    miner_id = await admitted(rpc, await rpc.token("bob"), worker.port)
    for _ in range(3):  # HiveMind's worker: the same request, no token, every 30 s (here every 25)
        clock.advance(25)
        assert (await rpc.nodes.RegisterWorkerNode(register_request(worker.port))).miner_id == miner_id
        await hub.hub.expire()
        assert hub.hub.live.nodes[miner_id].online
    # Another port, another user's name, a changed figure: none renews or changes bob's worker.
    for over in ({"port": worker.port + 1}, {"node_id": "mallory"}):
        code, _, error = await refused(
            rpc.nodes.RegisterWorkerNode(register_request(**{"port": worker.port, **over}))
        )
        assert (code, error) == (grpc.StatusCode.NOT_FOUND, "not_registered")
    await rpc.nodes.RegisterWorkerNode(register_request(worker.port, memory_gb=512))
    assert hub.hub.live.nodes[miner_id].record.spec["ram_gb"] == 16

    clock.advance(31)  # silent past the grace period: offline; the next refresh brings it back
    assert await hub.hub.expire() == [miner_id]
    await rpc.nodes.RegisterWorkerNode(register_request(worker.port))
    assert hub.hub.live.nodes[miner_id].online


async def test_in_allowlist_mode_a_worker_waits_for_an_admin(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], worker: FakeWorker
) -> None:
    hub = await live_hub_factory(grpc_enabled=True, grpc_port=0, registry_mode="allowlist")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        rpc = Stubs(channel)
        await hub.make_user("bob")
        answer = await rpc.nodes.RegisterWorkerNode(
            register_request(worker.port), metadata=bearer(await rpc.token("bob"))
        )
        assert answer.success and "pending" in answer.message
        await rpc.nodes.RegisterWorkerNode(register_request(worker.port))  # a refresh admits nothing
        assert answer.miner_id not in hub.hub.live.nodes
        assert not hub.hub.channels.connected(answer.miner_id)


# -- dispatch and uploads ---------------------------------------------------------------------------


async def test_dispatch_dials_the_worker_and_its_users_uploads_settle_from_the_hubs_clock(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker, clock: FakeClock
) -> None:
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    await hub.make_user("mallory")
    alice, bob, mallory = await rpc.token("alice"), await rpc.token("bob"), await rpc.token("mallory")
    miner_id = await admitted(rpc, bob, worker.port)
    await upload(
        rpc, alice, "job", memory_gb=3, gpu_memory_gb=0, env={"N": "it's 1"}, command=["sh", "run.sh"]
    )

    name, request = await worker.next_call()
    task_id = hub_task_id("alice", "job")
    assert (name, request.task_id, request.memory_gb) == ("ExecuteTask", task_id, 3)
    with zipfile.ZipFile(io.BytesIO(request.task_zip)) as archive:  # env travels in a run.sh of the hub's
        assert archive.read("task-run.sh") == b"echo hi\n"
        assert archive.read("run.sh") == b"#!/bin/sh\nexport N='it'\"'\"'s 1'\nexec sh task-run.sh\n"
    await until(lambda: hub.hub.tasks.views[task_id].state.value == "running")  # once the call returned

    for token, expected in (
        (mallory, grpc.StatusCode.PERMISSION_DENIED),
        ("", grpc.StatusCode.UNAUTHENTICATED),
    ):
        code, _, _ = await refused(
            rpc.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id=task_id, output="x", token=token))
        )
        assert code is expected
    for line in ("hello", "world"):  # HiveMind sends lines without their newline
        ack = await rpc.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=task_id, output=line), metadata=bearer(bob)
        )
        assert ack.success
    usage = await rpc.worker.TaskUsage(
        pb.TaskUsageRequest(task_id=task_id, cpu_usage=100, memory_usage=64_000, gpu_usage=100, token=bob)
    )
    assert usage.success

    clock.advance(120)  # what the hub's clock measures: 120 s at 1 token per 1000 s
    result = zipped({"execution_log.txt": b"Task ID: x\nStatus: Failed\n", "out.txt": b"partial"})
    code, _, _ = await refused(
        rpc.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(task_id=task_id, result_zip=result, token=mallory)
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    done = await rpc.worker.TaskResultUpload(
        pb.TaskResultUploadRequest(task_id=task_id, result_zip=result, token=bob)
    )
    assert done.success and done.message == "task FAILED"  # the worker's zip said so: its exit 1

    [info] = (await rpc.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=alice))).tasks
    assert (info.status, info.message, info.worker_ip, info.cost_micro) == (
        "FAILED",
        "task_failed",
        "127.0.0.1",
        120_000,
    )
    assert (
        await rpc.master.GetTasklog(pb.TasklogRequest(task_id="job", token=alice))
    ).log == "hello\nworld\n"
    got = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job", token=alice))
    assert (got.success, got.status, got.exit_code, got.result_zip) == (True, "FAILED", 1, result)
    hold = PRICE * 3600 // 1000
    assert await balances(hub, "user:alice", "user:bob") == [(10_000_000 - 120_000, 0), (120_000, 0)]
    assert hold > 120_000 and await books_balance(hub)
    # Sent again, it moves nothing.
    code, _, _ = await refused(
        rpc.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id=task_id, result_zip=result, token=bob))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert await balances(hub, "user:alice", "user:bob") == [(10_000_000 - 120_000, 0), (120_000, 0)]
    assert miner_id in hub.hub.live.nodes


async def test_a_worker_that_refuses_gets_the_task_back_in_the_queue(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker
) -> None:
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    worker.accept = False
    miner_id = await admitted(rpc, await rpc.token("bob"), worker.port)
    await upload(rpc, await rpc.token("alice"), "job")
    assert (await worker.next_call())[0] == "ExecuteTask"
    task_id = hub_task_id("alice", "job")
    await until(lambda: hub.hub.tasks.views[task_id].state.value == "queued")
    assert hub.hub.tasks.views[task_id].attempts == 0  # refused before running: no attempt spent
    assert not hub.hub.channels.connected(miner_id)  # not asked again until its next refresh


async def test_a_region_is_a_region_and_any_is_anywhere(hub: LiveHub, rpc: Stubs, worker: FakeWorker) -> None:
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    await admitted(rpc, await rpc.token("bob"), worker.port, location="Asia")
    alice = await rpc.token("alice")
    await upload(rpc, alice, "in-europe", location="Europe")
    await upload(rpc, alice, "anywhere", location="*")
    name, request = await worker.next_call()
    assert (name, request.task_id) == ("ExecuteTask", hub_task_id("alice", "anywhere"))
    await until(lambda: hub.hub.tasks.views[request.task_id].state.value == "running")
    listed = {
        t.task_id: t.status
        for t in (await rpc.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=alice))).tasks
    }
    assert listed == {"in-europe": "PENDING", "anywhere": "RUNNING"}


async def test_stop_dials_the_worker_and_the_hub_settles_at_once(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker, clock: FakeClock
) -> None:
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    await admitted(rpc, await rpc.token("bob"), worker.port)
    alice = await rpc.token("alice")
    await upload(rpc, alice, "job")
    await worker.next_call()
    clock.advance(30)
    stopped = await rpc.master.StopTask(pb.StopTaskRequest(task_id="job", token=alice))
    assert (stopped.status, worker.calls[-1][0], worker.calls[-1][1].task_id) == (
        "STOPPED",
        "StopTaskExecution",
        hub_task_id("alice", "job"),
    )
    assert await balances(hub, "user:alice", "user:bob") == [(10_000_000 - 30_000, 0), (30_000, 0)]
    assert await books_balance(hub)

    # What the worker sends back afterwards is kept once, from that worker's user only, and pays nothing.
    task_id, partial = (
        hub_task_id("alice", "job"),
        zipped({"execution_log.txt": b"Status: Stopped by user\n"}),
    )
    await hub.make_user("mallory")
    code, _, _ = await refused(
        rpc.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(task_id=task_id, result_zip=partial, token=await rpc.token("mallory"))
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    bob = await rpc.token("bob")
    kept = await rpc.worker.TaskResultUpload(
        pb.TaskResultUploadRequest(task_id=task_id, result_zip=partial, token=bob)
    )
    assert kept.success
    code, _, error = await refused(
        rpc.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(task_id=task_id, result_zip=partial, token=bob)
        )
    )
    assert (code, error) == (grpc.StatusCode.ALREADY_EXISTS, "result_sent")
    got = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job", token=alice))
    assert (got.success, got.status, got.result_zip) == (True, "STOPPED", partial)
    assert await balances(hub, "user:alice", "user:bob") == [(10_000_000 - 30_000, 0), (30_000, 0)]


async def test_a_signed_node_and_a_users_worker_share_one_pool(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker, clock: FakeClock
) -> None:
    """The signed node keeps its socket, its signed results and its session-token calls."""
    await hub.make_user("alice", balance=100_000_000)
    await hub.make_user("bob")
    signed = SimNode(hub, clock, "signed-1")
    await signed.connect()
    await admitted(rpc, await rpc.token("bob"), worker.port)
    alice = await rpc.token("alice")
    await upload(rpc, alice, "one", max_price_micro_per_ksec=3_000_000)
    await upload(rpc, alice, "two", max_price_micro_per_ksec=3_000_000)
    pushed = await signed.command("assign")
    _, dialed = await worker.next_call()
    assert {pushed["task"]["task_id"], dialed.task_id} == {
        hub_task_id("alice", "one"),
        hub_task_id("alice", "two"),
    }
    code, _, error = await refused(
        rpc.worker.TaskUsage(pb.TaskUsageRequest(task_id=pushed["task"]["task_id"], token=signed.token))
    )
    assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "signature_required")
    code, _, _ = await refused(
        rpc.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=dialed.task_id, output="x", token=signed.token)
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED  # a session speaks for its own node's tasks only


async def test_a_worker_that_cannot_be_reached_holds_nothing(hub: LiveHub, rpc: Stubs) -> None:
    """Registered, then gone before its refresh lapses: the dial fails, the task waits for another."""
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    miner_id = await admitted(rpc, await rpc.token("bob"), free_port())  # nothing listens there
    await upload(rpc, await rpc.token("alice"), "job")
    task_id = hub_task_id("alice", "job")
    await until(lambda: hub.hub.tasks.views[task_id].attempts == 1)  # assigned, the call under way
    await until(lambda: hub.hub.tasks.views[task_id].state.value == "queued")
    view = hub.hub.tasks.views[task_id]
    assert (view.attempts, view.assigned_node, hub.hub.channels.connected(miner_id)) == (0, None, False)
    assert await balances(hub, "user:bob") == [(0, 0)]


async def test_a_result_that_races_the_stop_is_kept_and_the_task_paid_once(
    hub: LiveHub, rpc: Stubs, worker: FakeWorker, clock: FakeClock
) -> None:
    """HiveMind's worker uploads its stopped task's zip while the hub's StopTaskExecution is in flight."""
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("bob")
    bob = await rpc.token("bob")
    await admitted(rpc, bob, worker.port)
    alice = await rpc.token("alice")
    await upload(rpc, alice, "job")
    await worker.next_call()
    task_id, partial = (
        hub_task_id("alice", "job"),
        zipped({"execution_log.txt": b"Status: Stopped by user\n"}),
    )
    answers: list[object] = []

    async def upload_first() -> None:
        request = pb.TaskResultUploadRequest(task_id=task_id, result_zip=partial, token=bob)
        answers.append(await rpc.worker.TaskResultUpload(request))

    worker.on_stop = upload_first
    clock.advance(10)
    stopped = await rpc.master.StopTask(pb.StopTaskRequest(task_id="job", token=alice))
    assert answers and stopped.status in ("STOPPED", "COMPLETED")
    got = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job", token=alice))
    assert (got.success, got.result_zip) == (True, partial)
    assert await balances(hub, "user:alice", "user:bob") == [(10_000_000 - 10_000, 0), (10_000, 0)]
    assert await books_balance(hub)
