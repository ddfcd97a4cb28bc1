"""Per-GPU telemetry of online nodes under dcgm-exporter's metric names (SPEC §3.7).

Dashboards and alerts written for NVIDIA's dcgm-exporter work against the hub unchanged: the same
names and units, labelled by ``miner`` (the node), ``gpu`` (its index), ``UUID`` and ``modelName``.
Values are the node's last heartbeat; a GPU whose reading the driver would not give is left out of
that family rather than reported as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpupool.hub.live import LiveRegistry, NodeSpec

LABELS = ["miner", "gpu", "UUID", "modelName"]


def _free_mib(g: dict[str, Any]) -> float | None:
    total, used = g.get("mem_total_mb"), g.get("mem_used_mb")
    return None if total is None or used is None else max(0.0, float(total) - float(used))


FAMILIES: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda g: g.get("util_pct")),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda g: g.get("mem_used_mb")),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", _free_mib),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.get("temp_c")),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.get("power_w")),
)


class GpuTelemetryCollector(Collector):
    """Reads the hot registry at scrape time; nothing is copied between scrapes."""

    def __init__(self, live: LiveRegistry) -> None:
        self.live = live

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time, so registration must not call collect()

    def collect(self) -> Iterator[Metric]:
        families = [(GaugeMetricFamily(name, doc, labels=LABELS), read) for name, doc, read in FAMILIES]
        for miner_id, node in list(self.live.nodes.items()):
            if not node.online or not node.telemetry:
                continue
            declared = {g.index: g for g in NodeSpec.from_record(node.record).gpus}
            for reading in node.telemetry.get("gpus") or []:
                spec = declared.get(int(reading.get("index", -1)))
                labels = [
                    miner_id,
                    str(reading.get("index")),
                    spec.uuid if spec else "",
                    spec.name if spec else "",
                ]
                for family, read in families:
                    value = read(reading)
                    if value is not None:
                        family.add_metric(labels, float(value))
        for family, _ in families:
            yield family
