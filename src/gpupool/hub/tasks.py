"""Tasks end to end on the hub: submit with escrow, dispatch, node reports, settlement — exactly once.

The state machine and the money arithmetic are ``core/scheduling.py``; this service persists every
transition in the same transaction as the money it moves. Submitting holds ``price cap x timeout x
GPUs`` in escrow (posting keyed by the task id, so a retried submit cannot hold twice); settlement
is a posting keyed by the task id too, so whatever is re-sent or retried, a task is paid for once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto, wire
from gpupool.core import ledger, matching, scheduling
from gpupool.core.model import Identity, Principal
from gpupool.core.ports import Clock
from gpupool.core.scheduling import Outcome, TaskState, TaskView
from gpupool.errors import (
    Forbidden,
    GpupoolError,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SignatureRejected,
)
from gpupool.hub.channels import NodeChannels
from gpupool.hub.files import BUNDLE, TaskFiles
from gpupool.hub.live import LiveRegistry, spec_price_micro
from gpupool.hub.postings import post_many_in
from gpupool.hub.rewards import contribution_from_usage
from gpupool.hub.signatures import SignedRequests
from gpupool.store.batches import WriteBatcher
from gpupool.store.db import Database
from gpupool.store.registry_repo import MinerRecord, RegistryRepo
from gpupool.store.rewards_repo import RewardsRepo
from gpupool.store.tasks_repo import OutputRow, TaskRow, TasksRepo

SYSTEM_ACTOR = "hub"
MAX_OUTPUT_CHUNK = wire.MAX_OUTPUT_CHUNK


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
        # Each live task's row and parsed spec: dispatch and settlement read nothing back.
        self.held: dict[str, _Held] = {}
        self.wakeup = asyncio.Event()
        self.output_event = asyncio.Condition()
        # Group commit for the two writes every task makes: many submits, many settlements a transaction.
        self._submits = WriteBatcher(db, self._write_submissions)
        self._finishes = WriteBatcher(db, self._write_finishes, alone=self._write_finish_read)
        # Kept up to date by _track/_forget, so a dispatch round never walks every live task.
        self._queue = scheduling.DispatchQueue()
        self._on_node: dict[str, set[str]] = {}
        self._claimed: set[str] = set()  # client-chosen ids of uploads under way
        self._appending = asyncio.Lock()

    async def load(self) -> None:
        """Take back the live tasks after a start; tasks on nodes that are gone are handled by expiry."""
        async with self.db.read() as conn:
            for row in await TasksRepo(conn).live():
                self.held[row.view.task_id] = _Held(row, row.spec)
                self._track(row.view)
        self.wakeup.set()

    # -- users ------------------------------------------------------------------------------------
    async def submit(
        self, principal: Principal, new: NewTask, bundle: Path | None = None, *, task_id: str | None = None
    ) -> TaskRow:
        """Hold the escrow and queue the task; ``bundle`` (a staged upload) becomes the task's files.

        ``task_id`` is for ids a client chose (gRPC's UploadTask): one taken already, by a task of any
        age or by an upload still under way, is refused before anything, its files included, is touched.
        """
        if task_id is None:
            return await self._submit(principal, new, bundle, secrets.token_hex(16))
        if task_id in self._claimed or task_id in self.views:
            raise IdempotencyConflict("a task with this id exists already", code="task_id_taken")
        self._claimed.add(task_id)
        try:
            async with self.db.read() as conn:
                if await TasksRepo(conn).get(task_id) is not None:
                    raise IdempotencyConflict("a task with this id exists already", code="task_id_taken")
            return await self._submit(principal, new, bundle, task_id)
        finally:
            self._claimed.discard(task_id)

    async def _submit(self, principal: Principal, new: NewTask, bundle: Path | None, task_id: str) -> TaskRow:
        submission = self._submission(principal, new, task_id, with_bundle=bundle is not None)
        if bundle is not None:  # in place before the task exists, so no node can ask for it too early
            target = self.files.task_dir(task_id) / BUNDLE
            target.parent.mkdir(parents=True, exist_ok=True)
            bundle.replace(target)
        try:
            await self._submits.submit(submission)
        except BaseException:
            self.files.discard(task_id)
            raise
        self._queued(submission)
        return submission.row

    async def submit_many(self, principal: Principal, news: list[NewTask]) -> list[TaskRow | BaseException]:
        """Many tasks (no bundles) in as few transactions as fit; each one held and queued, or refused."""
        submissions = [self._submission(principal, new, secrets.token_hex(16)) for new in news]
        answers = await self._submits.submit_many(submissions)
        for submission, answer in zip(submissions, answers, strict=True):
            if not isinstance(answer, BaseException):
                self._queued(submission)
        return [
            a if isinstance(a, BaseException) else s.row for s, a in zip(submissions, answers, strict=True)
        ]

    def _submission(
        self, principal: Principal, new: NewTask, task_id: str, *, with_bundle: bool = False
    ) -> _Submission:
        now = self.clock.now()
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
            "bundle": with_bundle,
        }
        hold = scheduling.hold_amount(new.price_cap_micro_per_ksec, new.timeout_sec, max(new.gpu_count, 1))
        return _Submission(
            TaskRow.new(view, principal.username, new.name, spec, hold), spec, principal.account
        )

    async def _write_submissions(
        self, conn: AsyncConnection, batch: Sequence[_Submission]
    ) -> list[TaskView | Exception]:
        now = self.clock.now()
        holds = [
            (ledger.escrow_hold(s.account, s.row.hold_micro), f"hold:{s.row.view.task_id}", s.row.owner)
            for s in batch
        ]
        await post_many_in(conn, holds, now)
        await TasksRepo(conn).add_many([s.row for s in batch])
        return [s.row.view for s in batch]

    def _queued(self, submission: _Submission) -> None:
        view = submission.row.view
        self.held[view.task_id] = _Held(submission.row, submission.spec)
        self._track(view)
        self.wakeup.set()

    async def get(self, principal: Principal, task_id: str) -> TaskRow:
        async with self.db.read() as conn:
            row = await TasksRepo(conn).get(task_id)
        if row is None or (row.owner != principal.username and not principal.is_admin):
            raise NotFound(f"no task {task_id}")  # another user's task does not exist for you
        return row

    async def page(
        self,
        principal: Principal,
        limit: int,
        before: float | None,
        states: Sequence[TaskState] = (),
        before_id: str | None = None,
    ) -> list[TaskRow]:
        owner = None if principal.is_admin else principal.username
        async with self.db.read() as conn:
            return await TasksRepo(conn).page(owner, limit, before, [s.value for s in states], before_id)

    async def output(self, task_id: str, from_seq: int) -> list[OutputRow]:
        async with self.db.read() as conn:
            return await TasksRepo(conn).output(task_id, from_seq)

    async def stop(self, principal: Principal, task_id: str) -> TaskView:
        row = await self.get(principal, task_id)
        view = self.views.get(task_id, row.view)
        if view.is_terminal:
            return view
        if view.state is TaskState.QUEUED:
            return (await self._finish(scheduling.stop(view, self.clock.now()), usage=None)).view
        # Running somewhere: the node kills it and reports what ran; that report settles it.
        await self.channels.send(view.assigned_node or "", wire.Stop(task_id=task_id))
        if self.bills_by_clock(view.assigned_node):  # it reports nothing the hub would bill from
            now = self.clock.now()
            return (await self._finish(scheduling.stop(view, now), usage=self._clock_usage(view, now))).view
        return view

    # -- dispatch ---------------------------------------------------------------------------------
    async def dispatch_once(self) -> int:
        """Assign queued tasks to matched nodes with a free slot and push them; returns how many."""
        if not self._queue:
            return 0
        capacity = {
            miner_id: int(node.record.spec.get("max_parallel", 1)) - len(self._on_node.get(miner_id, ()))
            for miner_id, node in self.live.nodes.items()
            if node.online and self.channels.connected(miner_id)
        }
        if not any(slots > 0 for slots in capacity.values()):
            return 0
        ranked: dict[tuple[str, int], list[str]] = {}

        def candidates(view: TaskView) -> list[str]:
            # Every node with a free slot, best first, ranked once per round for each kind of task: a
            # queue of a thousand alike tasks costs one match, and spreads over all the free nodes.
            req = self.held[view.task_id].spec["requirements"]
            shape = (json.dumps(req, sort_keys=True), view.price_cap_micro_per_ksec)
            if shape not in ranked:
                result = self.live.table.match(
                    matching.Requirements.from_mapping(req),
                    matching.Hints(region=req.get("region"), max_price=view.price_cap_micro_per_ksec),
                    top_k=max(1, len(capacity)),
                )
                ranked[shape] = [c.miner_id for c in result.candidates]
            return ranked[shape]

        taken: list[TaskView] = []

        def queue() -> Iterator[TaskView]:
            for view in self._queue.take(self.views):
                taken.append(view)
                yield view

        plan = scheduling.plan_dispatch(queue(), capacity, candidates)
        placed = {task_id for task_id, _ in plan}
        for view in taken:
            if view.task_id not in placed:
                self._queue.push(view)
        if plan:
            await self._assign_all(plan)
        return len(plan)

    async def _assign_all(self, plan: list[tuple[str, str]]) -> None:
        """Record every assignment of a dispatch round in one transaction, then push them all."""
        now = self.clock.now()
        changes = []
        messages: dict[str, list[wire.Assign]] = {}  # by node: one frame each where it batches
        for task_id, miner_id in plan:
            view = scheduling.assign(self.views[task_id], miner_id, now)
            node = self.live.nodes[miner_id]
            price = spec_price_micro(node.record.spec)
            changes.append((view, {"price_micro_per_ksec": price}))
            held = self.held[task_id]
            held.row = replace(held.row, price_micro_per_ksec=price)
            spec = held.spec
            gpus = int(spec["requirements"].get("gpu_count") or (1 if node.record.spec.get("gpus") else 0))
            task = wire.TaskAssignment(
                task_id=task_id,
                command=spec["command"],
                env=spec["env"],
                timeout_sec=view.timeout_sec,
                gpu_indices=list(range(gpus)),
                bundle=bool(spec.get("bundle")),
            )
            messages.setdefault(miner_id, []).append(wire.Assign(task=task))

        async def work(conn: AsyncConnection) -> None:
            await TasksRepo(conn).save_many(changes)

        await self.db.run(work)
        for view, _ in changes:
            self._track(view)
        sent = await asyncio.gather(*(self.channels.send_many(m, pushes) for m, pushes in messages.items()))
        for (miner_id, pushes), written in zip(messages.items(), sent, strict=True):
            for push in pushes[written:]:  # not delivered: back to the queue, the attempt counted
                view = self.views[push.task.task_id]
                await self._save(scheduling.node_refused(view, self.clock.now(), node_id=miner_id))

    async def _save(self, view: TaskView, **extra: Any) -> None:
        async def work(conn: AsyncConnection) -> None:
            await TasksRepo(conn).save(view, **extra)

        await self.db.run(work)
        self._track(view)

    def _track(self, view: TaskView) -> None:
        """The one place a live task's view changes: queue and per-node counts follow it."""
        self._forget(view.task_id)
        self.views[view.task_id] = view
        if view.state is TaskState.QUEUED:
            self._queue.push(view)
        elif view.assigned_node and view.state in (TaskState.ASSIGNED, TaskState.RUNNING):
            self._on_node.setdefault(view.assigned_node, set()).add(view.task_id)

    def _forget(self, task_id: str) -> None:
        old = self.views.pop(task_id, None)
        if old is not None and old.assigned_node:
            self._on_node.get(old.assigned_node, set()).discard(task_id)

    # -- node reports -----------------------------------------------------------------------------
    def _held_by(self, task_id: str, miner_id: str) -> TaskView:
        view = self.views.get(task_id)
        if view is None or view.assigned_node != miner_id:
            raise Forbidden("this task is not assigned to this node", code="not_assigned_node")
        return view

    async def node_output(self, miner_id: str, task_id: str, seq: int, stream: str, data: str) -> bool:
        if len(data) > MAX_OUTPUT_CHUNK:
            raise PayloadTooLarge(f"an output chunk holds at most {MAX_OUTPUT_CHUNK} characters")
        view = self._held_by(task_id, miner_id)
        now = self.clock.now()
        started = scheduling.start(view, now, node_id=miner_id) if view.state is TaskState.ASSIGNED else view

        async def work(conn: AsyncConnection) -> bool:
            repo = TasksRepo(conn)
            if started is not view:
                await repo.save(started)
            return await repo.add_output(task_id, seq, stream, data, now)

        stored = await self.db.run(work)
        self._track(started)
        async with self.output_event:
            self.output_event.notify_all()
        return stored

    async def node_output_appended(self, miner_id: str, task_id: str, stream: str, data: str) -> int:
        """Output sent with no sequence number (gRPC's TaskOutputUpload): the chunk after the last one.

        Such chunks are taken one at a time, so two sent together never claim the same number.
        """
        self._held_by(task_id, miner_id)
        async with self._appending:
            async with self.db.read() as conn:
                seq = await TasksRepo(conn).last_seq(task_id) + 1
            await self.node_output(miner_id, task_id, seq, stream, data)
        return seq

    async def node_result(self, miner_id: str, raw: Any) -> TaskRow:
        """A signed (kind 21002) result: finish the task and settle it, once."""
        return _only(await self.node_results(miner_id, [raw]))

    async def node_results(self, miner_id: str, raws: Sequence[Any]) -> list[TaskRow | BaseException]:
        """Signed results of one node, each answered on its own: the tasks they end settle together."""
        try:
            pubkey = await self._pubkey(miner_id)
        except GpupoolError as exc:
            return [exc] * len(raws)
        answers: list[TaskRow | BaseException | _Finish] = []
        for raw in raws:
            try:
                answers.append(await self._ended(miner_id, pubkey, raw))
            except GpupoolError as exc:
                answers.append(exc)
        finishing = [a for a in answers if isinstance(a, _Finish)]
        settled = iter(await self._finish_many(finishing) if finishing else ())
        return [next(settled) if isinstance(a, _Finish) else a for a in answers]

    async def _pubkey(self, miner_id: str) -> str:
        node = self.live.nodes.get(miner_id)
        record = node.record if node is not None else None
        if record is None:
            async with self.db.read() as conn:  # a result can come before the socket, after a hub restart
                record = await RegistryRepo(conn).miner(miner_id)
        if record is None:
            raise NotFound(f"no miner {miner_id}")
        if record.pubkey is None:  # account-bound: it has no key to sign a result with
            raise Forbidden("this node is account-bound and cannot sign results", code="unsigned_node")
        return record.pubkey

    async def _ended(self, miner_id: str, pubkey: str, raw: Any) -> _Finish | TaskRow:
        """What a verified result makes of its task: how it ended, or (re-sent) how it had ended."""
        if not isinstance(raw, Mapping):
            raise InvalidInput("a result is a signed body holding its task_id", field="result")
        result = wire.decode(wire.TaskResult, raw)
        task_id = result.task_id
        event = self.signed.check(raw, crypto.KIND_TASK_RESULT, pubkey)
        view = self.views.get(task_id)
        if view is None:  # finished already: a re-sent result is answered, not applied again
            async with self.db.read() as conn:
                row = await TasksRepo(conn).get(task_id)
            if row is None or row.view.assigned_node != miner_id:
                raise Forbidden("this task is not assigned to this node", code="not_assigned_node")
            return row
        view = self._held_by(task_id, miner_id)
        now = self.clock.now()
        if result.status == "stopped":
            ended = scheduling.stop(view, now)
        elif result.status == "expired":
            ended = scheduling.expire(view, now)
        else:
            ended = scheduling.finish(view, result.exit_code, now, node_id=miner_id)
        usage = wire.encode(result.usage) if result.usage is not None else None
        return _Finish(ended, usage, self._verified_artifacts(task_id, result.artifacts), event)

    def _verified_artifacts(self, task_id: str, claimed: Sequence[wire.Artifact]) -> list[dict[str, Any]]:
        """The claimed artifacts whose uploaded file has the claimed size and sha256; others are dropped."""
        verified = []
        for item in claimed:
            try:
                path = self.files.artifact(task_id, item.path)
            except InvalidInput:
                continue
            if self.files.digest_of(path) == (item.size, item.sha256):
                verified.append(wire.encode(item))
        return verified

    def assigned_to(self, task_id: str, miner_id: str) -> TaskView:
        return self._held_by(task_id, miner_id)

    # -- account-bound nodes: they sign nothing, so the hub bills them from its own clock ----------
    def bills_by_clock(self, miner_id: str | None) -> bool:
        node = self.live.nodes.get(miner_id or "")
        return node is not None and node.record.identity != Identity.SIGNED.value

    def holder(self, task_id: str) -> str | None:
        """The node a live task is assigned to, if any."""
        view = self.views.get(task_id)
        return view.assigned_node if view is not None else None

    def requirements_of(self, task_id: str) -> dict[str, Any]:
        held = self.held.get(task_id)
        return dict(held.spec["requirements"]) if held else {}

    async def node_started(self, miner_id: str, task_id: str) -> None:
        """The node took the task (a dialed node answered the call): it runs from now."""
        view = self._held_by(task_id, miner_id)
        if view.state is TaskState.ASSIGNED:
            await self._save(scheduling.start(view, self.clock.now(), node_id=miner_id))

    def bound_usage(self, miner_id: str, task_id: str, figures: dict[str, float]) -> None:
        """What an account-bound node says its task used: kept with the task, never billed from."""
        self._held_by(task_id, miner_id)
        self.held[task_id].reported = figures

    async def bound_result(
        self, miner_id: str, task_id: str, exit_code: int, artifacts: list[dict[str, Any]]
    ) -> TaskRow:
        """An account-bound node's result: settled once, for what the hub's clock measured."""
        if not self.bills_by_clock(miner_id):
            raise Forbidden("a signed node sends a signed result", code="signature_required")
        view = self._held_by(task_id, miner_id)
        now = self.clock.now()
        ended = scheduling.finish(view, exit_code, now, node_id=miner_id)
        row = _only(await self._finish_many([_Finish(ended, self._clock_usage(view, now), artifacts, None)]))
        if row.view.state is TaskState.STOPPED and artifacts and not row.artifacts:  # the stop came first

            async def kept() -> list[dict[str, Any]]:
                return artifacts

            row = await self.late_artifacts(miner_id, task_id, kept)
        return row

    async def last_node(self, task_id: str) -> str | None:
        """The node a task ran on last, live or finished."""
        view = self.views.get(task_id)
        if view is not None:
            return view.assigned_node
        async with self.db.read() as conn:
            row = await TasksRepo(conn).get(task_id)
        return row.view.assigned_node if row is not None else None

    async def late_artifacts(
        self, miner_id: str, task_id: str, keep: Callable[[], Awaitable[list[dict[str, Any]]]]
    ) -> TaskRow:
        """What a node sends back of a task the hub stopped and settled already: ``keep`` writes the
        files (once the node is known to have run it), the task lists them; they move no money."""
        async with self.db.read() as conn:
            row = await TasksRepo(conn).get(task_id)
        if row is None or row.view.assigned_node != miner_id or row.view.state is not TaskState.STOPPED:
            raise Forbidden("this task is not a stopped task of this node", code="not_assigned_node")
        if row.artifacts:
            raise IdempotencyConflict("this task's files were sent already", code="result_sent")
        artifacts = await keep()

        async def work(conn: AsyncConnection) -> None:
            await TasksRepo(conn).save(row.view, artifacts=artifacts)

        await self.db.run(work)
        return replace(row, artifacts=artifacts)

    def _clock_usage(self, view: TaskView, now: float) -> dict[str, Any]:
        """From assignment to now by the hub's clock, times the GPUs the task holds; what the node
        reported rides along, shown only."""
        held = self.held.get(view.task_id)
        seconds = max(0.0, now - (view.assigned_at or now))
        needs = held.spec["requirements"] if held else {}
        gpus = max(1, int(needs.get("gpu_count") or (1 if needs.get("min_vram_gb") else 0)))  # as held
        usage: dict[str, Any] = {"duration_sec": seconds, "gpu_seconds": seconds * gpus, "measured_by": "hub"}
        if held is not None and held.reported:
            usage["reported"] = held.reported
        return usage

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
    async def _finish(self, view: TaskView, *, usage: Any) -> TaskRow:
        """Settle a task that ended on the hub's side (stopped in the queue, out of attempts)."""
        return _only(await self._finish_many([_Finish(view, usage, None, None)]))

    async def _finish_many(self, items: list[_Finish]) -> list[TaskRow | BaseException]:
        """Settle tasks that ended, each once: a task settled already answers with how it ended."""
        answers = await self._finishes.submit_many(items)
        for item, answer in zip(items, answers, strict=True):
            if not isinstance(answer, BaseException):
                self._forget(item.view.task_id)
                self.held.pop(item.view.task_id, None)
        async with self.output_event:
            self.output_event.notify_all()
        self.wakeup.set()
        return answers

    async def _write_finishes(
        self, conn: AsyncConnection, batch: Sequence[_Finish]
    ) -> list[TaskRow | Exception]:
        """Settle a batch from what the hub holds of its live tasks, reading nothing back.

        What that assumes, the database enforces: a task settled already holds its settlement key, an
        event accepted already its replay claim, so a report that raced another fails the whole batch
        on a unique key, and ``_write_finish_read`` then settles each report alone.
        """
        rows: dict[str, TaskRow] = {}
        nodes: dict[str, MinerRecord] = {}
        for item in batch:
            task_id, miner_id = item.view.task_id, item.view.assigned_node
            held = self.held.get(task_id)
            node = self.live.nodes.get(miner_id) if miner_id else None
            if held is None or task_id in rows or (miner_id and node is None):
                raise _ReadBack(task_id)
            rows[task_id] = held.row
            if node is not None:
                nodes[node.record.miner_id] = node.record
        settled = await self._settle(conn, rows, {f.view.task_id: f for f in batch}, nodes)
        return [settled[f.view.task_id] for f in batch]

    async def _write_finish_read(
        self, conn: AsyncConnection, batch: Sequence[_Finish]
    ) -> list[TaskRow | Exception]:
        """Settle reports alone, reading each task's row: a task settled already is answered with it."""
        repo, registry = TasksRepo(conn), RegistryRepo(conn)
        rows = await repo.get_many([f.view.task_id for f in batch])
        seen = await registry.seen([str(f.event["id"]) for f in batch if f.event is not None])
        answers: list[TaskRow | Exception | str] = []  # a str: the row this batch settles
        settling: dict[str, _Finish] = {}
        for item in batch:
            task_id = item.view.task_id
            row = rows.get(task_id)
            if row is None:
                answers.append(NotFound(f"no task {task_id}"))
            elif row.view.is_terminal:
                answers.append(row)  # settled already, by an earlier report
            elif task_id in settling:
                answers.append(task_id)  # two reports in one batch: the first one counts
            elif item.event is not None and str(item.event["id"]) in seen:
                answers.append(
                    SignatureRejected("event already accepted once (replay)", code="replayed_event")
                )
            else:
                settling[task_id] = item
                answers.append(task_id)
                if item.event is not None:
                    seen.add(str(item.event["id"]))
        if settling:
            nodes = await registry.miners_by_id(
                [f.view.assigned_node for f in settling.values() if f.view.assigned_node]
            )
            rows |= await self._settle(conn, rows, settling, nodes)
        return [rows[a] if isinstance(a, str) else a for a in answers]

    async def _settle(
        self,
        conn: AsyncConnection,
        rows: Mapping[str, TaskRow],
        settling: Mapping[str, _Finish],
        nodes: Mapping[str, MinerRecord],
    ) -> dict[str, TaskRow]:
        """The end state, the payment or refund, the replay claim and the contribution of each task."""
        now = self.clock.now()
        claims, postings, saves, contributions, settled = [], [], [], [], {}
        for task_id, item in settling.items():
            row, view = rows[task_id], item.view
            if item.event is not None:
                claims.append((str(item.event["id"]), self.signed.expires_at(item.event)))
            usage = item.usage or {}
            gpu_seconds = float(usage.get("gpu_seconds", 0) or usage.get("duration_sec", 0) or 0)
            charge = scheduling.charge_for_usage(row.price_micro_per_ksec or 0, gpu_seconds)
            pay, _refund = scheduling.settle(scheduling.settlement_outcome(view), row.hold_micro, charge)
            node = nodes.get(view.assigned_node or "")
            owner = node.owner if node else None
            paid = pay if owner else 0
            user = ledger.username_account(row.owner)
            posting = ledger.settlement(user, row.hold_micro, owner if owner and paid else user, paid)
            postings.append((posting, f"settle:{task_id}", SYSTEM_ACTOR))
            saves.append((view, {"charge_micro": paid, "usage": item.usage, "artifacts": item.artifacts}))
            settled[task_id] = replace(
                row, view=view, charge_micro=paid, usage=item.usage, artifacts=item.artifacts
            )
            if node is not None and item.usage and view.outcome in (Outcome.SUCCEEDED, Outcome.TASK_FAILED):
                start = view.started_at or view.assigned_at or now
                contributions.append(
                    contribution_from_usage(node, task_id, dict(usage), start, now, self.epoch_of(now))
                )
        registry = RegistryRepo(conn)
        if claims:
            await registry.claim_events(claims)
        await post_many_in(conn, postings, now)
        await TasksRepo(conn).save_many(saves)
        await RewardsRepo(conn).add_contributions(contributions)
        return settled


def _only(answers: list[TaskRow | BaseException]) -> TaskRow:
    """The one answer of a batch of one, raised when it is an error."""
    (answer,) = answers
    if isinstance(answer, BaseException):
        raise answer
    return answer


class _ReadBack(Exception):
    """A report the batch cannot settle from memory alone; it is settled alone, reading its row."""


@dataclass(slots=True)
class _Held:
    """A live task as the hub holds it: its row as stored (its view aside) and its spec, parsed."""

    row: TaskRow
    spec: dict[str, Any]
    reported: dict[str, float] | None = None  # an account-bound node's own figures, shown only


@dataclass(frozen=True, slots=True)
class _Submission:
    row: TaskRow
    spec: dict[str, Any]
    account: str


@dataclass(frozen=True, slots=True)
class _Finish:
    view: TaskView
    usage: Any
    artifacts: Any
    event: Mapping[str, Any] | None
