"""For any sequence of node messages — lies, replays, out-of-order, duplicates — no user pays more than
price x GPUs x the time the hub saw, no hold outlives its task, and the books balance.

The hub's task service is driven in-process on a clock the test moves, with a real database and a
node whose every message is chosen by hypothesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpupool import crypto
from gpupool.config import HubSettings
from gpupool.core import ledger, scheduling, settlement
from gpupool.core.model import Principal, Role
from gpupool.core.ports import FakeClock
from gpupool.errors import GpupoolError
from gpupool.hub.container import Hub
from gpupool.hub.live import GpuSpec, NodeSpec
from gpupool.hub.tasks import NewTask
from gpupool.main import build_hub
from gpupool.store.tasks_repo import TasksRepo
from tests.factories import OWNER, gpu, registration

PRICE, CAP, TIMEOUT, TASKS = 2_000_000, 3_000_000, 100.0, 3
GRACES = {"dispatch_timeout_sec": 20.0, "stop_grace_sec": 10.0, "timeout_grace_sec": 5.0}
TOLERANCE = 0.02

task_index = st.integers(0, TASKS - 1)
event = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.1, 40)),
    st.tuples(st.just("dispatch")),
    st.tuples(st.just("output"), task_index),
    st.tuples(
        st.just("result"),
        task_index,
        st.sampled_from(["succeeded", "failed", "stopped", "expired", "bogus"]),
        st.one_of(st.floats(0, 1e7, allow_nan=False), st.sampled_from([0.0, 1e9])),
        st.integers(-2, 2),
    ),
    st.tuples(st.just("replay"), st.integers(0, 20)),
    st.tuples(st.just("stop"), task_index),
    st.tuples(st.just("enforce")),
    st.tuples(st.just("lose")),
    st.tuples(st.just("reconcile"), st.sets(task_index)),
    st.tuples(st.just("running"), st.sets(task_index)),
    st.tuples(st.just("beat")),
)


class Scenario:
    def __init__(self, hub: Hub, clock: FakeClock, key: crypto.KeyPair, user: Principal) -> None:
        self.hub, self.clock, self.key, self.user = hub, clock, key, user
        self.ids: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def play(self, step: tuple[Any, ...]) -> None:
        tasks, now = self.hub.tasks, self.clock.now()
        match step:
            case ("advance", float(seconds)):
                self.clock.advance(seconds)
            case ("dispatch",):
                await tasks.dispatch_once()
            case ("output", int(i)):
                await tasks.node_output("n1", self.ids[i], int(now * 1000), "stdout", "x")
            case ("result", int(i), str(status), float(gpu_seconds), int(code)):
                body = {
                    "task_id": self.ids[i],
                    "exit_code": code,
                    "status": status,
                    "usage": {"gpu_seconds": gpu_seconds, "duration_sec": gpu_seconds / 3},
                    "artifacts": [],
                }
                signed = crypto.sign_body(self.key, crypto.KIND_TASK_RESULT, body, created_at=int(now))
                self.sent.append(signed)
                await tasks.node_results("n1", [signed, signed])  # and a duplicate in the same batch
            case ("replay", int(n)) if self.sent:
                await tasks.node_result("n1", self.sent[n % len(self.sent)])
            case ("stop", int(i)):
                await tasks.stop(self.user, self.ids[i])
            case ("enforce",):
                await tasks.enforce()
            case ("lose",):
                await tasks.lose_nodes(["n1"])
            case ("reconcile", set(listed)):
                await tasks.reconcile("n1", [self.ids[i] for i in sorted(listed)])
            case ("running", set(listed)):
                await tasks.node_running("n1", [self.ids[i] for i in sorted(listed)])
            case ("beat",):
                self.hub.live.heartbeat("n1", now, 0, None)


async def _hub(tmp: Path, clock: FakeClock) -> tuple[Hub, crypto.KeyPair, Principal]:
    config = HubSettings.model_validate(
        {
            "db_url": f"sqlite:///{tmp / 'hub.db'}",
            "data_dir": tmp / "data",
            "storage_path": tmp / "artifacts",
            "admin_password": "admin-password-for-tests",
            "jwt_secret": "test-jwt-secret-0123456789abcdef0123456789",
            "grpc_enabled": False,
            "usage_tolerance": TOLERANCE,
            **GRACES,
        }
    )
    hub = build_hub(config, clock)
    await hub.db.migrate()
    record = await hub.auth.create_user(None, "alice", "alice-password", "user")
    await hub.ledger.post(ledger.mint("user:alice", 100 * CAP), scope="admin", key="fund", actor="t")
    key = crypto.KeyPair.generate()
    spec = NodeSpec(
        pubkey=key.pubkey,
        owner=OWNER,
        cpu_cores=8,
        ram_gb=64.0,
        price_micro_per_ksec=PRICE,
        max_parallel=2,
        gpus=(GpuSpec(**gpu(0)),),
        miner_id="n1",
    )
    raw = registration(key, clock, miner_id="n1", price_micro_per_ksec=PRICE, max_parallel=2)
    await hub.registry.register_miner(raw, spec, None)

    async def sender(message: dict[str, Any]) -> None:
        return None

    hub.channels.attach("n1", sender)
    return hub, key, Principal(record.id, "alice", Role.USER)


async def _run(tmp: Path, steps: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    hub, key, user = await _hub(tmp, clock)
    try:
        scenario = Scenario(hub, clock, key, user)
        for _ in range(TASKS):
            new = NewTask("t", ["work"], {}, {}, CAP, TIMEOUT, 2)
            scenario.ids.append((await hub.tasks.submit(user, new)).view.task_id)
        for step in steps:
            with contextlib.suppress(GpupoolError):  # refused: a lie or a replay the hub saw through
                await scenario.play(step)
        for _ in range(3):  # then the node goes silent: the hub ends what it holds on its own
            clock.advance(TIMEOUT + 20)
            await hub.tasks.enforce()
        await _check(hub, scenario.ids)
    finally:
        await hub.db.dispose()


async def _check(hub: Hub, ids: list[str]) -> None:
    async with hub.db.read() as conn:
        rows = await TasksRepo(conn).get_many(ids)
    held_live = 0
    for row in rows.values():
        view = row.view
        assert scheduling.problems(view) == [], (view, scheduling.problems(view))
        assert (
            view.state is not scheduling.TaskState.ASSIGNED and view.state is not scheduling.TaskState.RUNNING
        )
        if not view.is_terminal:
            held_live += row.hold_micro
            continue
        charge = row.charge_micro or 0
        seen = settlement.observed_seconds(view, GRACES["stop_grace_sec"])
        bound = scheduling.charge_for_usage(PRICE, seen * (1 + TOLERANCE))
        assert 0 <= charge <= min(bound, row.hold_micro), (view, charge, bound)
        if view.outcome is scheduling.Outcome.NODE_FAILED:
            assert charge == 0
    balance = await hub.ledger.balance("user:alice")
    assert balance.held == held_live  # no hold outlives its task
    owner = (await hub.ledger.balance(OWNER)).available
    paid = sum(r.charge_micro or 0 for r in rows.values())
    assert owner == paid and balance.available == 100 * CAP - paid - held_live
    assert (await hub.ledger.trial_balance()).balanced


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, max_size=30))
@example([("dispatch",), ("running", {0}), ("advance", 10.0), ("result", 0, "succeeded", 1e9, 0)])
@example([("dispatch",), ("advance", 5.0), ("result", 1, "stopped", 1e9, 0), ("dispatch",), ("stop", 1)])
@example([("dispatch",), ("output", 0), ("advance", 30.0), ("stop", 0), ("advance", 30.0), ("enforce",)])
def test_no_sequence_of_node_messages_overcharges_strands_a_hold_or_unbalances_the_books(
    steps: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), steps))
