"""Tasks and their output: the rows behind ``core/scheduling.TaskView`` and the resumable output stream."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, select, tuple_, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.scheduling import LIVE_STATES, Outcome, TaskState, TaskView
from gpupool.store.prepared import Prepared
from gpupool.store.tables import task_output, tasks


@dataclass(frozen=True, slots=True)
class TaskRow:
    view: TaskView
    owner: str
    name: str
    spec_json: str
    hold_micro: int
    price_micro_per_ksec: int | None
    charge_micro: int | None
    usage: dict[str, Any] | None
    artifacts: list[dict[str, Any]] | None

    @classmethod
    def new(cls, view: TaskView, owner: str, name: str, spec: dict[str, Any], hold_micro: int) -> TaskRow:
        """A task as submitted: not priced, charged or run yet."""
        return cls(view, owner, name, json.dumps(spec, sort_keys=True), hold_micro, None, None, None, None)

    @property
    def spec(self) -> dict[str, Any]:
        """Command, env and requirements; parsed when asked for (settlement never needs them)."""
        spec: dict[str, Any] = json.loads(self.spec_json)
        return spec


@dataclass(frozen=True, slots=True)
class OutputRow:
    seq: int
    stream: str
    data: str
    ts: float


def _row(r: Any) -> TaskRow:
    view = TaskView(
        task_id=r.task_id,
        state=TaskState(r.state),
        attempts=r.attempts,
        max_attempts=r.max_attempts,
        price_cap_micro_per_ksec=r.price_cap_micro_per_ksec,
        submitted_at=r.submitted_at,
        timeout_sec=r.timeout_sec,
        assigned_node=r.miner_id,
        assigned_at=r.assigned_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        exit_code=r.exit_code,
        outcome=Outcome(r.outcome) if r.outcome else None,
        stop_requested_at=r.stop_requested_at,
    )
    return TaskRow(
        view=view,
        owner=r.owner,
        name=r.name,
        spec_json=r.spec,
        hold_micro=r.hold_micro,
        price_micro_per_ksec=r.price_micro_per_ksec,
        charge_micro=r.charge_micro,
        usage=json.loads(r.usage) if r.usage else None,
        artifacts=json.loads(r.artifacts) if r.artifacts else None,
    )


_VIEW_COLUMNS = (
    "state",
    "attempts",
    "miner_id",
    "assigned_at",
    "started_at",
    "finished_at",
    "exit_code",
    "outcome",
    "stop_requested_at",
)
_INSERT = Prepared.insert(
    tasks,
    (
        "task_id",
        "owner",
        "name",
        "spec",
        "price_cap_micro_per_ksec",
        "timeout_sec",
        "max_attempts",
        "submitted_at",
        "hold_micro",
        *_VIEW_COLUMNS,
    ),
)


@cache
def _save_statement(columns: tuple[str, ...]) -> Prepared:
    """``UPDATE tasks SET … WHERE task_id = ?`` for these columns, compiled once."""
    return Prepared(
        update(tasks)
        .where(tasks.c.task_id == bindparam("b_task_id"))
        .values({c: bindparam(f"b_{c}") for c in columns if c != "task_id"})
    )


def _view_values(view: TaskView) -> dict[str, Any]:
    return {
        "state": view.state.value,
        "attempts": view.attempts,
        "miner_id": view.assigned_node,
        "assigned_at": view.assigned_at,
        "started_at": view.started_at,
        "finished_at": view.finished_at,
        "exit_code": view.exit_code,
        "outcome": view.outcome.value if view.outcome else None,
        "stop_requested_at": view.stop_requested_at,
    }


def page_query(
    owner: str | None,
    limit: int,
    before: float | None,
    states: Sequence[str] = (),
    before_id: str | None = None,
) -> Select[Any]:
    """Tasks newest first (``owner``'s, or everyone's), submitted before ``before``, in ``states``.

    ``before_id``, the id of the last task seen, makes the cursor exact: tasks submitted at the same
    instant (a batch) are ordered by id, and a page that ends among them goes on from there.

    Each listing reads an index in its order. With states, each state's newest ``limit`` come from
    its own index range and the page is the newest of those: sorting every task in the states instead
    took 11 ms for one row with 5,000 tasks queued, a cost the users watching a queue paid per poll.
    """
    newest = (tasks.c.submitted_at.desc(), tasks.c.task_id.desc())
    where: list[ColumnElement[bool]] = []
    if owner is not None:
        where.append(tasks.c.owner == owner)
    if before is not None and before_id is not None:
        where.append(tuple_(tasks.c.submitted_at, tasks.c.task_id) < tuple_(before, before_id))
    elif before is not None:
        where.append(tasks.c.submitted_at < before)
    query = select(tasks).order_by(*newest).limit(limit)
    if not states:
        return query.where(*where)
    heads = [
        select(tasks.c.task_id).where(*where, tasks.c.state == s).order_by(*newest).limit(limit).subquery()
        for s in dict.fromkeys(states)
    ]
    return query.where(tasks.c.task_id.in_(union_all(*(select(head.c.task_id) for head in heads))))


class TasksRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    async def add_many(self, rows: Sequence[TaskRow]) -> None:
        """New tasks (``TaskRow.new``); a task id taken already fails the whole call."""
        await _INSERT.many(
            self.conn,
            [
                {
                    "task_id": r.view.task_id,
                    "owner": r.owner,
                    "name": r.name,
                    "spec": r.spec_json,
                    "price_cap_micro_per_ksec": r.view.price_cap_micro_per_ksec,
                    "timeout_sec": r.view.timeout_sec,
                    "max_attempts": r.view.max_attempts,
                    "submitted_at": r.view.submitted_at,
                    "hold_micro": r.hold_micro,
                    **_view_values(r.view),
                }
                for r in rows
            ],
        )

    async def get(self, task_id: str) -> TaskRow | None:
        row = (await self.conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
        return _row(row) if row else None

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskRow]:
        rows = await self.conn.execute(select(tasks).where(tasks.c.task_id.in_(list(set(task_ids)))))
        return {r.task_id: _row(r) for r in rows}

    async def save(self, view: TaskView, **extra: Any) -> None:
        """Persist a transition; ``extra`` carries price, charge, usage or artifacts when they change."""
        await self.save_many([(view, extra)])

    async def save_many(self, changes: Sequence[tuple[TaskView, dict[str, Any]]]) -> None:
        """Many transitions, one statement per set of columns they change."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for view, extra in changes:
            values = {**_view_values(view), **extra, "task_id": view.task_id}
            for key in ("usage", "artifacts"):
                if key in extra:
                    values[key] = json.dumps(extra[key]) if extra[key] is not None else None
            groups.setdefault(tuple(sorted(values)), []).append({f"b_{k}": v for k, v in values.items()})
        for columns, params in groups.items():
            await _save_statement(columns).many(self.conn, params)

    async def live(self) -> list[TaskRow]:
        rows = await self.conn.execute(select(tasks).where(tasks.c.state.in_([s.value for s in LIVE_STATES])))
        return [_row(r) for r in rows]

    async def page(
        self,
        owner: str | None,
        limit: int,
        before: float | None,
        states: Sequence[str] = (),
        before_id: str | None = None,
    ) -> list[TaskRow]:
        query = page_query(owner, limit, before, states, before_id)
        return [_row(r) for r in await self.conn.execute(query)]

    async def add_output(self, task_id: str, seq: int, stream: str, data: str, ts: float) -> bool:
        """Store one output chunk; a chunk re-sent with a seq already stored changes nothing."""
        stmt = (
            self._insert(task_output)
            .values(task_id=task_id, seq=seq, stream=stream, data=data, ts=ts)
            .on_conflict_do_nothing(index_elements=["task_id", "seq"])
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def output(self, task_id: str, from_seq: int, limit: int = 500) -> list[OutputRow]:
        rows = await self.conn.execute(
            select(task_output.c.seq, task_output.c.stream, task_output.c.data, task_output.c.ts)
            .where(and_(task_output.c.task_id == task_id, task_output.c.seq >= from_seq))
            .order_by(task_output.c.seq)
            .limit(limit)
        )
        return [OutputRow(r.seq, r.stream, r.data, r.ts) for r in rows]

    async def last_seq(self, task_id: str) -> int:
        value = (
            await self.conn.execute(
                select(func.max(task_output.c.seq)).where(task_output.c.task_id == task_id)
            )
        ).scalar()
        return -1 if value is None else int(value)
