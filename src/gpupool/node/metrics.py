"""The node's Prometheus metrics, ``GET /metrics`` on ``LISTEN_ADDR``.

Read from the agent, the task worker and the PoW service when scraped, so nothing is counted twice
and the hot paths pay nothing: the hub already exports what it sees of every node, this is what the
node sees of itself (its socket, its tasks, the throughput of its proof-of-compute round).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# (status field, metric name, help) for the PoC round's figures, as ``GET /api/v1/pow/status`` has them.
POC_GAUGES = (
    ("nonces_per_s", "gpupool_node_poc_nonces_per_second", "Nonces computed per second in this round"),
    ("qualified_per_s", "gpupool_node_poc_qualified_per_second", "Qualifying nonces per second, this round"),
)
POC_COUNTERS = (
    ("nonces_computed", "gpupool_node_poc_nonces_computed", "Nonces computed in this round"),
    ("nonces_qualified", "gpupool_node_poc_nonces_qualified", "Qualifying nonces found in this round"),
    ("nonces_submitted", "gpupool_node_poc_nonces_submitted", "Nonces the hub accepted in this round"),
    ("batches_submitted", "gpupool_node_poc_batches_submitted", "Batches the hub accepted in this round"),
    ("batches_rejected", "gpupool_node_poc_batches_rejected", "Batches the hub refused in this round"),
)


class NodeCollector(Collector):
    def __init__(
        self,
        connected: Callable[[], bool],
        tasks_running: Callable[[], int],
        pow_status: Callable[[], dict[str, Any]],
    ) -> None:
        self.connected = connected
        self.tasks_running = tasks_running
        self.pow_status = pow_status

    def collect(self) -> Iterator[Metric]:
        connected = int(self.connected())
        yield GaugeMetricFamily("gpupool_node_hub_connected", "1 while the hub's socket is open", connected)
        yield GaugeMetricFamily("gpupool_node_tasks_running", "Tasks running here", self.tasks_running())
        status = self.pow_status()
        state = GaugeMetricFamily(
            "gpupool_node_poc_state", "The PoW service state: IDLE, LOADING, GENERATING, …", labels=["state"]
        )
        state.add_metric([str(status.get("status", "IDLE"))], 1)
        yield state
        for field, name, text in POC_GAUGES:
            yield GaugeMetricFamily(name, text, float(status.get(field) or 0))
        for field, name, text in POC_COUNTERS:
            if field in status:  # a figure this mode does not have is left out, not reported as 0
                yield CounterMetricFamily(name, text, float(status[field] or 0))


def metrics_route(collector: NodeCollector) -> Route:
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics)
