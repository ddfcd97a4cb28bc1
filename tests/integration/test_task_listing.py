"""A user's task list, newest first, paged and filtered by state, on both backends.

The rows are written through ``TasksRepo`` (what the hub's services write), so a listing of hundreds
of tasks in every state is quick to build; the HTTP route over it is covered in ``test_tasks_api``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import scheduling
from gpupool.core.scheduling import TaskState
from gpupool.store.tasks_repo import TaskRow, TasksRepo, page_query
from tests.conftest import HubClient


def newest_first(rows: Iterable[TaskRow]) -> list[TaskRow]:
    """The listing's order: newest first, ties (one batch) by task id, descending."""
    return sorted(rows, key=lambda r: (r.view.submitted_at, r.view.task_id), reverse=True)


async def _fill(hub_client: HubClient) -> dict[str, TaskRow]:
    """300 tasks of two users, submitted four at a time (a batch shares its instant); every fifth still
    queued, every seventh running."""
    rows, changes = {}, []
    for i in range(300):
        view = scheduling.new_task(
            f"{i:032x}",
            price_cap_micro_per_ksec=1,
            submitted_at=1000.0 + i // 4,
            timeout_sec=1,
            max_attempts=1,
        )
        rows[view.task_id] = TaskRow.new(view, "alice" if i % 3 else "bob", "t", {"command": ["x"]}, 1)
        if i % 5:
            view = scheduling.start(scheduling.assign(view, "node", 2000.0), 2001.0, node_id="node")
            view = scheduling.finish(view, 0, 2002.0, node_id="node") if i % 7 else view
            changes.append((view, {}))

    async def write(conn: AsyncConnection) -> None:
        await TasksRepo(conn).add_many(list(rows.values()))
        await TasksRepo(conn).save_many(changes)

    await hub_client.hub.db.run(write)
    return rows | {view.task_id: replace(rows[view.task_id], view=view) for view, _ in changes}


@pytest.mark.parametrize(
    ("owner", "states", "size"),
    [
        ("alice", [], 33),
        ("alice", [TaskState.QUEUED, TaskState.RUNNING], 7),  # pages smaller than each state's share
        (None, [TaskState.RUNNING, TaskState.QUEUED, TaskState.SUCCEEDED], 25),
    ],
)
async def test_pages_walk_tasks_newest_first_once_each(
    hub_client: HubClient, owner: str | None, states: list[TaskState], size: int
) -> None:
    rows = await _fill(hub_client)
    seen: list[str] = []
    before, before_id = None, None
    while True:
        async with hub_client.hub.db.read() as conn:
            page = await TasksRepo(conn).page(owner, size, before, [s.value for s in states], before_id)
        seen += [r.view.task_id for r in page]
        if len(page) < size:
            break
        before, before_id = page[-1].view.submitted_at, page[-1].view.task_id
    expected = newest_first(
        r for r in rows.values() if owner in (None, r.owner) and (not states or r.view.state in states)
    )
    assert seen == [r.view.task_id for r in expected]


@pytest.mark.parametrize("states", [[TaskState.QUEUED], [TaskState.QUEUED, TaskState.RUNNING]])
async def test_a_state_filter_lists_only_those_tasks_newest_first(
    hub_client: HubClient, states: list[TaskState]
) -> None:
    rows = await _fill(hub_client)
    async with hub_client.hub.db.read() as conn:
        listed = await TasksRepo(conn).page("bob", 500, None, [s.value for s in states])
        admin = await TasksRepo(conn).page(None, 500, None, [s.value for s in states])
    expected = newest_first(r for r in rows.values() if r.view.state in states)
    assert [r.view.task_id for r in listed] == [r.view.task_id for r in expected if r.owner == "bob"]
    assert [r.view.task_id for r in admin] == [r.view.task_id for r in expected]
    assert {r.view.state for r in listed} == set(states)


async def test_sqlite_serves_listings_from_an_index_not_a_sort_of_every_task(
    hub_client: HubClient,
) -> None:
    """A page of the newest tasks must not read all of the user's tasks (17 ms at 20,000 with the
    owner index alone, and growing); a state filter must read each state's newest from its index, not
    sort every task in those states (11 ms for one row with 5,000 queued)."""
    if not hub_client.hub.db.is_sqlite:
        pytest.skip("query plans are SQLite's here; PostgreSQL plans by its statistics")
    async with hub_client.hub.db.read() as conn:

        async def plan(owner: str | None, states: list[str]) -> str:
            query = page_query(owner, 50, None, states)
            sql = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            return " | ".join(r[-1] for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))

        plain = await plan("alice", [])
        filtered = await plan("alice", ["queued", "running"])
        everyones = await plan(None, ["queued", "running"])
    assert "ix_tasks_owner_submitted_at" in plain and "TEMP B-TREE" not in plain
    # Each state read in page order from its index; one sort, of at most a page per state.
    assert filtered.count("COVERING INDEX ix_tasks_owner_state (owner=? AND state=?)") == 2
    assert everyones.count("COVERING INDEX ix_tasks_state_submitted_at (state=?)") == 2
    assert filtered.count("TEMP B-TREE") == everyones.count("TEMP B-TREE") == 1


async def test_the_http_listing_pages_through_one_batch_exactly(hub_client: HubClient) -> None:
    """Five tasks of one batch share their instant; pages of two, resumed with ``before_id``, see each
    once (with ``before`` alone, the rest of a batch cut by a page would be skipped)."""
    user = await hub_client.make_user("alice", balance=10**9)
    task = {"command": ["true"], "max_price_micro_per_ksec": 1000, "timeout_sec": 10}
    resp = await hub_client.http.post("/v1/tasks/batch", json={"tasks": [task] * 5}, headers=user)
    submitted = {t["task_id"] for t in resp.json()["tasks"]}
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = (await hub_client.http.get("/v1/tasks", params=params, headers=user)).json()
        seen += [t["task_id"] for t in page]
        if len(page) < 2:
            break
        params = {"limit": 2, "before": page[-1]["submitted_at"], "before_id": page[-1]["task_id"]}
    assert sorted(seen) == sorted(submitted) and len(seen) == 5
