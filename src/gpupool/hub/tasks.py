"""Tasks end to end on the hub: submit with escrow, dispatch, node reports, settlement — exactly once.

The state machine and the money arithmetic are ``core/scheduling.py``; this service persists every
transition in the same transaction as the money it moves. Submitting holds ``price cap x timeout x
GPUs`` in escrow (posting keyed by the task id, so a retried submit cannot hold twice); settlement
is a posting keyed by the task id too, so whatever is re-sent or retried, a task is paid for once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto
from gpupool.core import ledger, matching, scheduling
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.core.scheduling import Outcome, TaskState, TaskView
from gpupool.errors import Forbidden, InvalidInput, NotFound
from gpupool.hub.channels import NodeChannels
from gpupool.hub.files import BUNDLE, TaskFiles
from gpupool.hub.live import LiveRegistry
from gpupool.hub.postings import post_in
from gpupool.hub.rewards import contribution_from_usage
from gpupool.hub.signatures import SignedRequests
from gpupool.store.db import Database
from gpupool.store.registry_repo import RegistryRepo
from gpupool.store.rewards_repo import RewardsRepo
from gpupool.store.tasks_repo import OutputRow, TaskRow, TasksRepo

SYSTEM_ACTOR = "hub"


@dataclass(frozen=True, slots=True)
class NewTask:
    name: str
    command: list[str]
    env: dict[str, str]
    requirements: dict[str, Any]
    price_cap_micro_per_ksec: int
    timeout_sec: float
    max_attempts: int

    @property
    def gpu_count(self) -> int:
        return int(self.requirements.get("gpu_count") or (1 if self.requirements.get("min_vram_gb") else 0))


class TaskService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        live: LiveRegistry,
        channels: NodeChannels,
        signed: SignedRequests,
        epoch_of: Callable[[float], int],
        files: TaskFiles,
    ) -> None:
        self.db = db
        self.clock = clock
        self.live = live
        self.channels = channels
        self.signed = signed
        self.epoch_of = epoch_of
        self.files = files
        self.views: dict[str, TaskView] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.wakeup = asyncio.Event()
        self.output_event = asyncio.Condition()

    async def load(self) -> None:
        """Take back the live tasks after a start; tasks on nodes that are gone are handled by expiry."""
        async with self.db.read() as conn:
            for row in await TasksRepo(conn).live():
                self.views[row.view.task_id] = row.view
                self.specs[row.view.task_id] = row.spec
        self.wakeup.set()

    # -- users ------------------------------------------------------------------------------------
    async def submit(self, principal: Principal, new: NewTask, bundle: Path | None = None) -> TaskView:
        """Hold the escrow and queue the task; ``bundle`` (a staged upload) becomes the task's files."""
        task_id = secrets.token_hex(16)
        now = self.clock.now()
        hold = scheduling.hold_amount(new.price_cap_micro_per_ksec, new.timeout_sec, max(new.gpu_count, 1))
        view = scheduling.new_task(
            task_id,
            price_cap_micro_per_ksec=new.price_cap_micro_per_ksec,
            submitted_at=now,
            timeout_sec=new.timeout_sec,
            max_attempts=new.max_attempts,
        )
        spec = {
            "command": new.command,
            "env": new.env,
            "requirements": new.requirements,
            "bundle": bundle is not None,
        }

        async def work(conn: AsyncConnection) -> None:
            await post_in(
                conn, ledger.escrow_hold(principal.account, hold), f"hold:{task_id}", principal.username, now
            )
            await TasksRepo(conn).add(view, principal.username, new.name, spec, hold)

        if bundle is not None:  # in place before the task exists, so no node can ask for it too early
            target = self.files.task_dir(task_id) / BUNDLE
            target.parent.mkdir(parents=True, exist_ok=True)
            bundle.replace(target)
        try:
            await self.db.run(work)
        except BaseException:
            self.files.discard(task_id)
            raise
        self.views[task_id], self.specs[task_id] = view, spec
        self.wakeup.set()
        return view

    async def row(self, task_id: str) -> TaskRow:
        async with self.db.read() as conn:
            row = await TasksRepo(conn).get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}")
        return row

    async def get(self, principal: Principal, task_id: str) -> TaskRow:
        async with self.db.read() as conn:
            row = await TasksRepo(conn).get(task_id)
        if row is None or (row.owner != principal.username and not principal.is_admin):
            raise NotFound(f"no task {task_id}")  # another user's task does not exist for you
        return row

    async def page(self, principal: Principal, limit: int, before: float | None) -> list[TaskRow]:
        async with self.db.read() as conn:
            return await TasksRepo(conn).page(
                None if principal.is_admin else principal.username, limit, before
            )

    async def output(self, task_id: str, from_seq: int) -> list[OutputRow]:
        async with self.db.read() as conn:
            return await TasksRepo(conn).output(task_id, from_seq)

    async def stop(self, principal: Principal, task_id: str) -> TaskView:
        row = await self.get(principal, task_id)
        view = self.views.get(task_id, row.view)
        if view.is_terminal:
            return view
        if view.state is TaskState.QUEUED:
            return await self._finish(scheduling.stop(view, self.clock.now()), usage=None)
        # Running somewhere: the node kills it and reports what ran; that report settles it.
        await self.channels.send(view.assigned_node or "", {"type": "stop", "task_id": task_id})
        return view

    # -- dispatch ---------------------------------------------------------------------------------
    async def dispatch_once(self) -> int:
        """Assign queued tasks to matched nodes with a free slot and push them; returns how many."""
        queue = scheduling.order_queue(v for v in self.views.values() if v.state is TaskState.QUEUED)
        if not queue:
            return 0
        running: dict[str, int] = {}
        for v in self.views.values():
            if v.state in (TaskState.ASSIGNED, TaskState.RUNNING) and v.assigned_node:
                running[v.assigned_node] = running.get(v.assigned_node, 0) + 1
        capacity = {
            miner_id: int(node.record.spec.get("max_parallel", 1)) - running.get(miner_id, 0)
            for miner_id, node in self.live.nodes.items()
            if node.online and self.channels.connected(miner_id)
        }
        plan = scheduling.plan_dispatch(queue, capacity, self._candidates)
        for task_id, miner_id in plan:
            await self._assign(task_id, miner_id)
        return len(plan)

    def _candidates(self, view: TaskView) -> list[str]:
        req = self.specs[view.task_id]["requirements"]
        result = self.live.table.match(
            matching.Requirements.from_mapping(req),
            matching.Hints(region=req.get("region"), max_price=view.price_cap_micro_per_ksec),
            top_k=10,
        )
        return [c.miner_id for c in result.candidates]

    async def _assign(self, task_id: str, miner_id: str) -> None:
        now = self.clock.now()
        view = scheduling.assign(self.views[task_id], miner_id, now)
        node = self.live.nodes[miner_id]
        price = int(node.record.spec.get("price_token_per_ksec", 0))
        await self._save(view, price_micro_per_ksec=price)
        spec = self.specs[task_id]
        gpus = int(spec["requirements"].get("gpu_count") or (1 if node.record.spec.get("gpus") else 0))
        message = {
            "type": "assign",
            "task": {
                "task_id": task_id,
                "command": spec["command"],
                "env": spec["env"],
                "timeout_sec": view.timeout_sec,
                "gpu_indices": list(range(gpus)),
                "bundle": bool(spec.get("bundle")),
            },
        }
        if not await self.channels.send(miner_id, message):
            await self._save(scheduling.node_refused(view, self.clock.now(), node_id=miner_id))

    async def _save(self, view: TaskView, **extra: Any) -> None:
        async def work(conn: AsyncConnection) -> None:
            await TasksRepo(conn).save(view, **extra)

        await self.db.run(work)
        self.views[view.task_id] = view

    # -- node reports -----------------------------------------------------------------------------
    def _held_by(self, task_id: str, miner_id: str) -> TaskView:
        view = self.views.get(task_id)
        if view is None or view.assigned_node != miner_id:
            raise Forbidden("this task is not assigned to this node", code="not_assigned_node")
        return view

    async def node_output(self, miner_id: str, task_id: str, seq: int, stream: str, data: str) -> bool:
        view = self._held_by(task_id, miner_id)
        now = self.clock.now()
        started = scheduling.start(view, now, node_id=miner_id) if view.state is TaskState.ASSIGNED else view

        async def work(conn: AsyncConnection) -> bool:
            repo = TasksRepo(conn)
            if started is not view:
                await repo.save(started)
            return await repo.add_output(task_id, seq, stream, data, now)

        stored = await self.db.run(work)
        self.views[task_id] = started
        async with self.output_event:
            self.output_event.notify_all()
        return stored

    async def node_result(self, miner_id: str, raw: Mapping[str, Any]) -> TaskView:
        """A signed (kind 21002) result: finish the task and settle it, once."""
        task_id = str(raw.get("task_id", ""))
        node = self.live.nodes.get(miner_id)
        if node is not None:
            pubkey = node.record.pubkey
        else:  # a result can arrive before the node's socket is back after a hub restart
            async with self.db.read() as conn:
                record = await RegistryRepo(conn).miner(miner_id)
            if record is None:
                raise NotFound(f"no miner {miner_id}")
            pubkey = record.pubkey
        event = self.signed.check(raw, crypto.KIND_TASK_RESULT, pubkey)
        view = self.views.get(task_id)
        if view is None:  # finished already: a re-sent result is answered, not applied again
            async with self.db.read() as conn:
                row = await TasksRepo(conn).get(task_id)
            if row is None or row.view.assigned_node != miner_id:
                raise Forbidden("this task is not assigned to this node", code="not_assigned_node")
            return row.view
        view = self._held_by(task_id, miner_id)
        now = self.clock.now()
        status = str(raw.get("status", "succeeded"))
        if status == "stopped":
            ended = scheduling.stop(view, now)
        elif status == "expired":
            ended = scheduling.expire(view, now)
        else:
            ended = scheduling.finish(view, int(raw.get("exit_code", 1)), now, node_id=miner_id)
        artifacts = self._verified_artifacts(task_id, raw.get("artifacts"))
        return await self._finish(ended, usage=raw.get("usage"), artifacts=artifacts, event=event)

    def _verified_artifacts(self, task_id: str, claimed: Any) -> list[dict[str, Any]]:
        """The claimed artifacts whose uploaded file has the claimed size and sha256; others are dropped."""
        verified = []
        for item in claimed if isinstance(claimed, list) else []:
            try:
                path = self.files.artifact(task_id, str(item["path"]))
            except (KeyError, TypeError, InvalidInput):
                continue
            if self.files.digest_of(path) == (item.get("size"), item.get("sha256")):
                verified.append({"path": str(item["path"]), "size": item["size"], "sha256": item["sha256"]})
        return verified

    def assigned_to(self, task_id: str, miner_id: str) -> TaskView:
        return self._held_by(task_id, miner_id)

    async def lose_nodes(self, miner_ids: list[str]) -> None:
        """Nodes went silent: their tasks go back to the queue, or fail when out of attempts."""
        gone = set(miner_ids)
        for view in list(self.views.values()):
            if view.assigned_node in gone and view.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                lost = scheduling.lose_node(view, self.clock.now(), node_id=view.assigned_node)
                if lost.is_terminal:
                    await self._finish(lost, usage=None)
                else:
                    await self._save(lost)
        self.wakeup.set()

    # -- settlement -------------------------------------------------------------------------------
    async def _finish(
        self,
        view: TaskView,
        *,
        usage: Any,
        artifacts: Any = None,
        event: Mapping[str, Any] | None = None,
    ) -> TaskView:
        async def work(conn: AsyncConnection) -> TaskView:
            repo = TasksRepo(conn)
            row = await repo.get(view.task_id)
            if row is None:
                raise NotFound(f"no task {view.task_id}")
            if row.view.is_terminal:
                return row.view  # settled already, by an earlier report
            if event is not None:
                await self.signed.claim(RegistryRepo(conn), event)
            gpu_seconds = float(
                (usage or {}).get("gpu_seconds", 0) or (usage or {}).get("duration_sec", 0) or 0
            )
            charge = scheduling.charge_for_usage(row.price_micro_per_ksec or 0, gpu_seconds)
            pay, _refund = scheduling.settle(scheduling.settlement_outcome(view), row.hold_micro, charge)
            node = await RegistryRepo(conn).miner(view.assigned_node) if view.assigned_node else None
            owner = node.owner if node else None
            user = ledger.username_account(row.owner)
            payee = owner if owner and pay else user
            posting = ledger.settlement(user, row.hold_micro, payee, pay if owner else 0)
            await post_in(conn, posting, f"settle:{view.task_id}", SYSTEM_ACTOR, self.clock.now())
            await repo.save(view, charge_micro=pay if owner else 0, usage=usage, artifacts=artifacts)
            if node is not None and usage and view.outcome in (Outcome.SUCCEEDED, Outcome.TASK_FAILED):
                now = self.clock.now()
                start = view.started_at or view.assigned_at or now
                contribution = contribution_from_usage(
                    node, view.task_id, dict(usage), start, now, self.epoch_of(now)
                )
                await RewardsRepo(conn).add_contribution(contribution)
            return view

        finished = await self.db.run(work)
        self.views.pop(view.task_id, None)
        self.specs.pop(view.task_id, None)
        async with self.output_event:
            self.output_event.notify_all()
        self.wakeup.set()
        return finished
