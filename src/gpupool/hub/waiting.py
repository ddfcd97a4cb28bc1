"""A queued task's ``waiting_reason``: the live node table's match for it, put into words.

Read-only and on demand (a task view asks, the dispatcher never does), so it costs nothing while no
one looks, and always says what the matcher would say now.
"""

from __future__ import annotations

import json
from typing import Any

from gpupool.core import matching
from gpupool.core.scheduling import TaskState
from gpupool.core.waiting import waiting_reason
from gpupool.hub.live import LiveRegistry
from gpupool.store.tasks_repo import TaskRow


class WaitingReasons:
    """Reasons for the queued tasks of one listing: tasks that ask alike are matched once."""

    def __init__(self, live: LiveRegistry) -> None:
        self.live = live
        self._seen: dict[tuple[str, int], str] = {}

    def of(self, row: TaskRow) -> str | None:
        if row.view.state is not TaskState.QUEUED:
            return None
        req: dict[str, Any] = row.spec.get("requirements") or {}
        price = row.view.price_cap_micro_per_ksec
        shape = (json.dumps(req, sort_keys=True), price)
        if shape not in self._seen:
            result = self.live.table.match(
                matching.Requirements.from_mapping(req),
                matching.Hints(region=req.get("region"), max_price=price),
                top_k=1,
            )
            self._seen[shape] = waiting_reason(
                len(self.live.table), len(result.candidates), result.rejected, req
            )
        return self._seen[shape]
