"""The hub's gRPC transport (SPEC §6) against the real hub: HiveMind's nodepool services over the same
services as HTTP, so what one transport does the other sees (balances, tasks, the ledger's books)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gpupool import crypto
from gpupool.core.ports import FakeClock
from gpupool.rpc import services
from gpupool.rpc.errors import ERROR_CODE_KEY
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from tests.conftest import ADMIN_PASSWORD, HubClient, LiveHub
from tests.integration.test_tasks_api import balances, books_balance
from tests.simnode import SimNode

DEFAULT_PRICE = 1_000_000  # the hub's default price cap for gRPC uploads, micro-units per ksec
DEFAULT_HOLD = DEFAULT_PRICE * 3600 // 1000  # x the default timeout of 3600 s


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.users = pb_grpc.UserServiceStub(channel)
        self.nodes = pb_grpc.NodeManagerServiceStub(channel)
        self.master = pb_grpc.MasterNodeServiceStub(channel)
        self.worker = pb_grpc.WorkerNodeServiceStub(channel)

    async def token(self, username: str, password: str | None = None) -> str:
        answer = await self.users.Login(
            pb.LoginRequest(username=username, password=password or f"pw-{username}-secret")
        )
        assert answer.success
        return str(answer.token)


def grpc_port(hub: LiveHub) -> int:
    port: int = hub.server.config.app.state.grpc.port
    return port


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory(grpc_enabled=True, grpc_port=0)


@pytest.fixture
async def rpc(hub: LiveHub) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        yield Stubs(channel)


async def refused(call: Awaitable[object]) -> tuple[grpc.StatusCode, str, str]:
    """The status, message and gpupool error code of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    codes = [v for k, v in (error.trailing_metadata() or ()) if k == ERROR_CODE_KEY]
    return error.code(), str(error.details()), str(codes[0]) if codes else ""


def zipped(files: dict[str, bytes], *, modes: dict[str, int] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            archive.writestr(info, content)
    return out.getvalue()


# -- users ------------------------------------------------------------------------------------------


async def test_login_and_balance_share_the_http_accounts(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=5_000_000)
    login = await rpc.users.Login(pb.LoginRequest(username="alice", password="pw-alice-secret"))
    assert login.success and login.token and login.refresh_token and login.expires_in == 3600

    balance = await rpc.users.GetBalance(pb.GetBalanceRequest(username="alice", token=login.token))
    assert (balance.balance, balance.balance_micro, balance.held_micro) == (5, 5_000_000, 0)
    # The same token works as an HTTP bearer, and the standard gRPC header works too.
    me = await hub.http.get("/v1/me", headers={"Authorization": f"Bearer {login.token}"})
    assert me.json()["username"] == "alice"
    by_header = await rpc.users.GetBalance(
        pb.GetBalanceRequest(username="alice"), metadata=(("authorization", f"Bearer {login.token}"),)
    )
    assert by_header.balance == 5  # whole tokens, as HiveMind shows them


async def test_bad_credentials_and_tokens_are_refused_with_the_hubs_codes(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice")
    code, _, error = await refused(
        rpc.users.Login(pb.LoginRequest(username="alice", password="wrong-password"))
    )
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials")
    code, _, error = await refused(rpc.users.GetBalance(pb.GetBalanceRequest(username="alice")))
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    code, _, error = await refused(
        rpc.users.GetBalance(pb.GetBalanceRequest(username="alice", token="x.y.z"))
    )
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_token")


async def test_a_user_reads_only_their_own_balance_and_an_admin_reads_any(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=1_000)
    await hub.make_user("bob", balance=2_000)
    bob = await rpc.token("bob")
    code, _, _ = await refused(rpc.users.GetBalance(pb.GetBalanceRequest(username="alice", token=bob)))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    admin = await rpc.token("admin", ADMIN_PASSWORD)
    answer = await rpc.users.GetBalance(pb.GetBalanceRequest(username="alice", token=admin))
    assert (answer.balance, answer.balance_micro) == (0, 1_000)  # a thousandth of a token: 0 whole ones


async def test_transfer_moves_money_once_per_key_and_never_overdraws(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=1_000_000)
    await hub.make_user("bob")
    alice = await rpc.token("alice")

    first = await rpc.users.Transfer(
        pb.TransferRequest(
            token=alice, receiver_username="bob", amount_micro=250_000, idempotency_key="rent-1"
        )
    )
    again = await rpc.users.Transfer(
        pb.TransferRequest(
            token=alice, receiver_username="bob", amount_micro=250_000, idempotency_key="rent-1"
        )
    )
    assert first.success and not first.replayed and again.replayed and again.transfer_id == first.transfer_id
    assert await balances(hub, "user:alice", "user:bob") == [(750_000, 0), (250_000, 0)]

    code, _, error = await refused(
        rpc.users.Transfer(pb.TransferRequest(token=alice, receiver_username="bob", amount=1))
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "insufficient_funds")
    for amount in (0, -5):
        code, _, error = await refused(
            rpc.users.Transfer(pb.TransferRequest(token=alice, receiver_username="bob", amount=amount))
        )
        assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_input")
    code, _, _ = await refused(
        rpc.users.Transfer(pb.TransferRequest(token=alice, receiver_username="nobody", amount_micro=1))
    )
    assert code is grpc.StatusCode.NOT_FOUND

    # Without keys, every call is its own transfer: 30 at once of 50,000 from 750,000 → exactly 15.
    calls = [
        rpc.users.Transfer(pb.TransferRequest(token=alice, receiver_username="bob", amount_micro=50_000))
        for _ in range(30)
    ]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(1 for a in answers if isinstance(a, pb.TransferResponse)) == 15
    assert all(
        a.code() is grpc.StatusCode.FAILED_PRECONDITION
        for a in answers
        if isinstance(a, grpc.aio.AioRpcError)
    )
    assert await balances(hub, "user:alice", "user:bob") == [(0, 0), (1_000_000, 0)]
    assert await books_balance(hub)

    # HiveMind sends whole tokens (CPT): bob's 1 token back to alice; a figure twice must agree.
    bob = await rpc.token("bob")
    code, _, _ = await refused(
        rpc.users.Transfer(pb.TransferRequest(token=bob, receiver_username="alice", amount=1, amount_micro=2))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    back = await rpc.users.Transfer(pb.TransferRequest(token=bob, receiver_username="alice", amount=1))
    assert back.success and back.amount_micro == 1_000_000
    assert await balances(hub, "user:alice", "user:bob") == [(1_000_000, 0), (0, 0)]


async def test_refresh_rotates_refresh_tokens_and_a_reuse_ends_every_session(
    hub: LiveHub, rpc: Stubs, clock: FakeClock
) -> None:
    await hub.make_user("alice", balance=7)
    login = await rpc.users.Login(pb.LoginRequest(username="alice", password="pw-alice-secret"))

    rotated = await rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token=login.refresh_token))
    assert rotated.new_token and rotated.refresh_token != login.refresh_token
    assert (await rpc.users.GetBalance(pb.GetBalanceRequest(token=rotated.new_token))).balance_micro == 7
    code, _, error = await refused(
        rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token=login.refresh_token))
    )
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "refresh_token_reused")
    # The reuse revoked the family and every session of the user: refresh and access tokens alike.
    code, _, _ = await refused(
        rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token=rotated.refresh_token))
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED
    for token in (login.token, rotated.new_token):
        code, _, error = await refused(rpc.users.GetBalance(pb.GetBalanceRequest(token=token)))
        assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "token_revoked")
    code, _, _ = await refused(rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token="")))
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_an_access_token_is_exchanged_for_access_tokens_only_and_not_past_its_session(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    """HiveMind's clients send their access token to RefreshToken: they get another access token,
    never a refresh token, and a chain of exchanges ends when the login's session would have."""
    hub = await live_hub_factory(grpc_enabled=True, grpc_port=0, refresh_expiry_days=1)
    await hub.make_user("alice", balance=7)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        rpc = Stubs(channel)
        login = await rpc.users.Login(pb.LoginRequest(username="alice", password="pw-alice-secret"))
        session_end = clock.now() + 86400
        token, exchanges = login.token, 0
        while True:
            clock.advance(3000)  # each access token is exchanged before its hour is over
            try:
                answer = await rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token=token))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
                assert dict(exc.trailing_metadata() or ())[ERROR_CODE_KEY] == "token_expired"
                break
            exchanges += 1
            assert answer.refresh_token == ""  # never a refresh family from an access token
            assert clock.now() + answer.expires_in <= session_end
            assert (
                await rpc.users.GetBalance(pb.GetBalanceRequest(token=answer.new_token))
            ).balance_micro == 7
            token = answer.new_token
        assert exchanges == 86400 // 3000  # the chain stops with the session, not before
        assert clock.now() >= session_end
        # HTTP refresh does not take an access token either.
        resp = await hub.http.post("/v1/auth/refresh", json={"refresh_token": login.token})
        assert resp.status_code in (401, 422)


async def test_a_disabled_or_deleted_users_token_is_refused_over_grpc(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=7)
    await hub.make_user("bob")
    token = await rpc.token("alice")
    admin = await hub.admin_headers()
    assert (await hub.http.post("/v1/admin/users/alice/disable", headers=admin)).status_code == 200
    for call in (
        rpc.users.GetBalance(pb.GetBalanceRequest(token=token)),
        rpc.users.Transfer(pb.TransferRequest(token=token, receiver_username="bob", amount=1)),
        rpc.users.RefreshToken(pb.RefreshTokenRequest(old_token=token)),
    ):
        code, _, error = await refused(call)
        assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "token_revoked")
    code, _, _ = await refused(rpc.users.Login(pb.LoginRequest(username="alice", password="pw-alice-secret")))
    assert code is grpc.StatusCode.UNAUTHENTICATED

    bob = await rpc.token("bob")
    assert (await hub.http.delete("/v1/admin/users/bob", headers=admin)).status_code == 204
    await hub.make_user("bob", balance=5)
    code, _, error = await refused(rpc.users.GetBalance(pb.GetBalanceRequest(token=bob)))
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "token_revoked")
    assert (await rpc.users.GetBalance(pb.GetBalanceRequest(token=await rpc.token("bob")))).balance_micro == 5


# -- tasks ------------------------------------------------------------------------------------------


async def test_upload_run_and_collect_a_task_with_a_hivemind_client(
    hub: LiveHub, rpc: Stubs, clock: FakeClock
) -> None:
    """The whole path: UploadTask (zip) → a real node gets its bundle → output and signed result
    over gRPC → GetAllUserTasks, GetTasklog and GetTaskResult show it; the user paid once."""
    await hub.make_user("alice", balance=10_000_000)
    alice = await rpc.token("alice")
    node = SimNode(hub, clock, "grpc-node")  # asks 2 tokens per ksec
    await node.connect()

    script = b"#!/bin/sh\necho hello\n"
    uploaded = await rpc.master.UploadTask(
        pb.UploadTaskRequest(
            task_id="job-0001",
            task_zip=zipped({"run.sh": script, "data/input.txt": b"42\n"}, modes={"run.sh": 0o755}),
            memory_gb=1,
            gpu_memory_gb=40,
            gpu_name="H100",
            max_price_micro_per_ksec=3_000_000,
            timeout_sec=1000,
            token=alice,
        )
    )
    hold = 3_000_000  # 3 tokens/ksec x 1000 s
    assert (uploaded.success, uploaded.task_id, uploaded.status, uploaded.hold_micro) == (
        True,
        "job-0001",
        "PENDING",
        hold,
    )
    task_id = services.hub_task_id("alice", "job-0001")
    assert await balances(hub, "user:alice") == [(10_000_000 - hold, hold)]

    assign = await node.command("assign")
    assert assign["task"]["task_id"] == task_id
    assert assign["task"]["command"] == ["sh", "run.sh"] and assign["task"]["bundle"] is True
    bundle = await hub.http.get(f"/v1/tasks/{task_id}/bundle", headers={"X-Session-Token": node.token})
    with tarfile.open(fileobj=io.BytesIO(bundle.content)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"run.sh", "data/input.txt"}
        assert members["run.sh"].mode == 0o755
        assert tar.extractfile("run.sh").read() == script  # type: ignore[union-attr]

    before = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job-0001", token=alice))
    assert (before.success, before.status, before.result_zip) == (False, "PENDING", b"")

    for text in ("hello\n", "world\n"):
        ack = await rpc.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=task_id, output=text, token=node.token)
        )
        assert ack.success
    resent = await rpc.worker.TaskOutputUpload(
        pb.TaskOutputUploadRequest(task_id=task_id, output="hello\n", token=node.token, seq=0)
    )
    assert "seen already" in resent.message
    result_zip = zipped({"answer.txt": b"42"})
    body = {
        "task_id": task_id,
        "exit_code": 0,
        "status": "succeeded",
        "usage": {"gpu_seconds": 500.0, "duration_sec": 500.0, "cpu_seconds": 250.0},
        "artifacts": [
            {"path": "result.zip", "size": len(result_zip), "sha256": hashlib.sha256(result_zip).hexdigest()}
        ],
    }
    signed = crypto.sign_body(node.key, crypto.KIND_TASK_RESULT, body, created_at=int(clock.now()))
    done = await rpc.worker.TaskResultUpload(
        pb.TaskResultUploadRequest(
            task_id=task_id,
            result_zip=result_zip,
            token=node.token,
            signed_result=json.dumps(signed),
        )
    )
    assert done.success and "task succeeded" in done.message

    log = await rpc.master.GetTasklog(pb.TasklogRequest(task_id="job-0001", token=alice))
    assert log.log == "hello\nworld\n"
    listed = await rpc.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=alice))
    [row] = listed.tasks
    assert (row.task_id, row.status, row.state, row.cost_micro) == (
        "job-0001",
        "COMPLETED",
        "succeeded",
        1_000_000,
    )
    assert row.worker_ip == "10.0.0.7"  # the node registered addr 10.0.0.7:8080
    assert row.cpu_usage == 50  # 250 cpu-seconds in 500 s
    result = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="job-0001", token=alice))
    assert (result.success, result.status, result.exit_code) == (True, "COMPLETED", 0)
    assert result.result_zip == result_zip  # the node's own result zip, as it sent it
    # By the hub's id too, and the node was paid once, whatever is re-sent.
    assert (await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=alice))).success
    assert await balances(hub, "user:alice") == [(9_000_000, 0)]
    assert await books_balance(hub)


async def test_a_task_id_is_taken_once_even_when_uploaded_twice_at_once(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=100_000_000)
    await hub.make_user("bob", balance=100_000_000)
    alice, bob = await rpc.token("alice"), await rpc.token("bob")
    request = pb.UploadTaskRequest(task_id="same", task_zip=zipped({"run.sh": b"echo 1"}), token=alice)

    answers = await asyncio.gather(
        *(rpc.master.UploadTask(request) for _ in range(5)), return_exceptions=True
    )
    assert sum(1 for a in answers if isinstance(a, pb.UploadTaskResponse)) == 1
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(errors) == 4 and all(e.code() is grpc.StatusCode.ALREADY_EXISTS for e in errors)
    code, _, error = await refused(rpc.master.UploadTask(request))  # and later, once it is queued
    assert (code, error) == (grpc.StatusCode.ALREADY_EXISTS, "task_id_taken")
    assert await balances(hub, "user:alice") == [(100_000_000 - DEFAULT_HOLD, DEFAULT_HOLD)]
    # The first upload's files are still its own.
    with tarfile.open(hub.hub.tasks.files.bundle(services.hub_task_id("alice", "same"))) as tar:
        assert tar.getnames() == ["run.sh"]
    # Another user's "same" is another task.
    request.token = bob
    assert (await rpc.master.UploadTask(request)).success
    listed = await rpc.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=bob))
    assert [t.task_id for t in listed.tasks] == ["same"]


async def test_all_user_tasks_are_listed_once_across_pages(
    hub: LiveHub, rpc: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads at one instant (the test's clock stands still), read two per query: each listed once."""
    monkeypatch.setattr(services, "ALL_TASKS_PAGE", 2)
    await hub.make_user("alice", balance=100_000_000)
    alice = await rpc.token("alice")
    names = [f"job-{i}" for i in range(5)]
    for name in names:
        await rpc.master.UploadTask(pb.UploadTaskRequest(task_id=name, command=["true"], token=alice))
    listed = await rpc.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=alice))
    assert sorted(t.task_id for t in listed.tasks) == names


@pytest.mark.parametrize(
    ("files", "modes", "command", "says"),
    [
        ({"notes.txt": b"no entry point"}, {}, [], "run.sh or main.py"),
        ({"../escape.sh": b"rm -rf /"}, {}, ["sh", "x"], "not a safe relative path"),
        ({"/etc/passwd": b"root"}, {}, ["sh", "x"], "not a safe relative path"),
        ({"run.sh": b"/etc/shadow"}, {"run.sh": 0o120777}, [], "holds a link"),
    ],
)
async def test_bad_zips_are_refused_and_nothing_is_held(
    hub: LiveHub, rpc: Stubs, files: dict[str, bytes], modes: dict[str, int], command: list[str], says: str
) -> None:
    await hub.make_user("alice", balance=100_000_000)
    alice = await rpc.token("alice")
    request = pb.UploadTaskRequest(
        task_id="bad", task_zip=zipped(files, modes=modes), command=command, token=alice
    )
    code, message, error = await refused(rpc.master.UploadTask(request))
    assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_input") and says in message, message
    assert await balances(hub, "user:alice") == [(100_000_000, 0)]
    assert not list((hub.hub.tasks.files.root / "staging").glob("*"))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timeout_sec": float("nan")}, "timeout_sec"),
        ({"timeout_sec": 8 * 86400.0}, "timeout_sec"),
        ({"max_price_micro_per_ksec": -1}, "max_price_micro_per_ksec"),
        ({"max_attempts": 21}, "max_attempts"),
        ({"command": ["x"] * 257}, "command"),
        ({"memory_gb": -1}, "requirements.min_ram_gb"),
    ],
)
async def test_upload_figures_follow_the_http_apis_rules(
    hub: LiveHub, rpc: Stubs, fields: dict[str, object], field: str
) -> None:
    await hub.make_user("alice", balance=100_000_000)
    alice = await rpc.token("alice")
    request = pb.UploadTaskRequest(task_id="t", token=alice, **{"command": ["true"], **fields})  # type: ignore[arg-type]
    code, message, _ = await refused(rpc.master.UploadTask(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and message.startswith(f"{field}:"), message
    assert await balances(hub, "user:alice") == [(100_000_000, 0)]


async def test_not_a_zip_a_zip_bomb_and_no_money_are_refused(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=DEFAULT_HOLD - 1)
    alice = await rpc.token("alice")
    code, _, _ = await refused(
        rpc.master.UploadTask(pb.UploadTaskRequest(task_zip=b"PK\x03\x04 not", token=alice))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT

    # 200 MB of zeros in a few hundred kB: refused at the bundle cap (100 MB), not unpacked to disk.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(2):
            archive.writestr(f"zeros-{i}", b"\0" * (100 * 2**20))
    code, _, error = await refused(
        rpc.master.UploadTask(pb.UploadTaskRequest(task_zip=bomb.getvalue(), command=["true"], token=alice))
    )
    assert (code, error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large")

    code, _, error = await refused(
        rpc.master.UploadTask(pb.UploadTaskRequest(task_zip=zipped({"main.py": b"print(1)"}), token=alice))
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "insufficient_funds")
    assert await balances(hub, "user:alice") == [(DEFAULT_HOLD - 1, 0)]
    assert not list((hub.hub.tasks.files.root / "staging").glob("*"))
    assert not (hub.hub.tasks.files.root / "tasks").exists() or not list(
        (hub.hub.tasks.files.root / "tasks").iterdir()
    )


async def test_stop_a_queued_task_releases_its_hold(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice", balance=10_000_000)
    await hub.make_user("mallory")
    alice, mallory = await rpc.token("alice"), await rpc.token("mallory")
    await rpc.master.UploadTask(
        pb.UploadTaskRequest(
            task_id="t1", command=["echo", "hi"], max_price_micro_per_ksec=2_000, timeout_sec=100, token=alice
        )
    )
    assert await balances(hub, "user:alice") == [(10_000_000 - 200, 200)]
    code, _, _ = await refused(rpc.master.StopTask(pb.StopTaskRequest(task_id="t1", token=mallory)))
    assert code is grpc.StatusCode.NOT_FOUND  # someone else's task does not exist for you

    stopped = await rpc.master.StopTask(pb.StopTaskRequest(task_id="t1", token=alice))
    assert (stopped.success, stopped.status) == (True, "STOPPED")
    assert await balances(hub, "user:alice") == [(10_000_000, 0)]
    result = await rpc.master.GetTaskResult(pb.GetTaskResultRequest(task_id="t1", token=alice))
    assert (result.success, result.status, result.HasField("exit_code")) == (False, "STOPPED", False)
    code, _, _ = await refused(rpc.master.GetTasklog(pb.TasklogRequest(task_id="t2", token=alice)))
    assert code is grpc.StatusCode.NOT_FOUND


# -- node side --------------------------------------------------------------------------------------


async def test_node_calls_need_the_nodes_session_and_its_own_task(
    hub: LiveHub, rpc: Stubs, clock: FakeClock
) -> None:
    await hub.make_user("alice", balance=10_000_000)
    alice = await rpc.token("alice")
    runner, stranger = SimNode(hub, clock, "runner"), SimNode(hub, clock, "stranger", region="elsewhere")
    await runner.connect()
    await rpc.master.UploadTask(
        pb.UploadTaskRequest(
            task_id="t", command=["true"], max_price_micro_per_ksec=2_000_000, timeout_sec=1000, token=alice
        )
    )
    task_id = (await runner.command("assign"))["task"]["task_id"]
    await stranger.connect()

    code, _, error = await refused(
        rpc.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=task_id, output="x", token=stranger.token)
        )
    )
    assert (code, error) == (grpc.StatusCode.PERMISSION_DENIED, "not_assigned_node")
    code, _, error = await refused(
        rpc.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id=task_id, output="x", token="forged"))
    )
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "session_invalid")
    code, _, _ = await refused(
        rpc.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=task_id, output="x", token=runner.token, stream="tty")
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    # A result signed by another key settles nothing, and the zip of a stranger is not kept.
    forged = await stranger.signed_result(task_id, files={})
    code, _, _ = await refused(
        rpc.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(task_id=task_id, token=runner.token, signed_result=json.dumps(forged))
        )
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, _, _ = await refused(
        rpc.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(task_id=task_id, token=stranger.token, result_zip=b"zip")
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert await balances(hub, "user:alice") == [(8_000_000, 2_000_000)]

    # A signed node's usage is billed from its signed result only.
    code, _, error = await refused(
        rpc.worker.TaskUsage(pb.TaskUsageRequest(task_id=task_id, gpu_usage=99, token=runner.token))
    )
    assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "signature_required")
    # What a HiveMind master calls on its workers, the hub calls on them; it serves none of it.
    for call in (
        rpc.worker.ExecuteTask(pb.ExecuteTaskRequest(task_id=task_id)),
        rpc.worker.TaskOutput(pb.TaskOutputRequest(task_id=task_id)),
        rpc.worker.StopTaskExecution(pb.StopTaskExecutionRequest(task_id=task_id)),
    ):
        code, message, _ = await refused(call)
        assert code is grpc.StatusCode.UNIMPLEMENTED and "served by a worker" in message


async def test_report_status_keeps_a_node_alive(hub: LiveHub, rpc: Stubs, clock: FakeClock) -> None:
    node = SimNode(hub, clock, "reporter")
    await node.connect()
    await node.ws.close()
    clock.advance(25)
    answer = await rpc.nodes.ReportStatus(
        pb.RunningStatusRequest(node_id="reporter", running_tasks=0, session_token=node.token)
    )
    assert answer.success
    clock.advance(25)  # 50 s after the socket's last beat, 25 after the report: within the 30 s grace
    await hub.hub.expire()
    assert hub.hub.live.nodes["reporter"].online
    code, _, error = await refused(
        rpc.nodes.ReportStatus(pb.RunningStatusRequest(node_id="someone-else", session_token=node.token))
    )
    assert (code, error) == (grpc.StatusCode.PERMISSION_DENIED, "session_mismatch")
    code, _, _ = await refused(rpc.nodes.ReportStatus(pb.RunningStatusRequest(node_id="reporter")))
    assert code is grpc.StatusCode.UNAUTHENTICATED


# -- the server itself ------------------------------------------------------------------------------


async def test_health_names_the_grpc_port(hub: LiveHub, hub_client: HubClient) -> None:
    features = (await hub.http.get("/v1/health")).json()["features"]
    assert features["grpc_port"] == grpc_port(hub) > 0
    assert (await hub_client.http.get("/v1/health")).json()["features"]["grpc_port"] is None  # turned off


async def test_every_call_is_counted_by_method_and_code(hub: LiveHub, rpc: Stubs) -> None:
    await hub.make_user("alice")
    await rpc.token("alice")
    for _ in range(2):
        await refused(rpc.users.Login(pb.LoginRequest(username="alice", password="wrong-password")))
    await refused(rpc.worker.ExecuteTask(pb.ExecuteTaskRequest(task_id="t")))
    metrics = (await hub.http.get("/metrics")).text
    login = 'method="/nodepool.UserService/Login"'
    assert f'poolhub_grpc_requests_total{{code="OK",{login}}} 1.0' in metrics
    assert f'poolhub_grpc_requests_total{{code="UNAUTHENTICATED",{login}}} 2.0' in metrics
    execute = 'method="/nodepool.WorkerNodeService/ExecuteTask"'
    assert f'poolhub_grpc_requests_total{{code="UNIMPLEMENTED",{execute}}} 1.0' in metrics
    assert f"poolhub_grpc_request_duration_seconds_count{{{login}}} 3.0" in metrics


async def test_reflection_lists_the_four_nodepool_services(hub: LiveHub) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(hub)}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = [a async for a in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {
        "nodepool.UserService",
        "nodepool.NodeManagerService",
        "nodepool.MasterNodeService",
        "nodepool.WorkerNodeService",
    } <= names


async def test_a_taken_grpc_port_stops_the_hub_from_starting(
    hub_client_factory: Callable[..., Awaitable[HubClient]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="cannot serve gRPC"):
            await hub_client_factory(grpc_enabled=True, grpc_port=port)


def test_the_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """``make proto`` was run after the last change to nodepool.proto."""
    src = Path(__file__).resolve().parents[2] / "src"
    proto = "gpupool/rpc/protos/nodepool.proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(src / proto),
        ],
        check=True,
    )
    for name in ("nodepool_pb2.py", "nodepool_pb2.pyi", "nodepool_pb2_grpc.py"):
        generated = (tmp_path / "gpupool/rpc/protos" / name).read_text()
        assert generated == (src / "gpupool/rpc/protos" / name).read_text(), (
            f"{name} is stale: run make proto"
        )
