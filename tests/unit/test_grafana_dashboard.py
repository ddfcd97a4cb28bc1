"""The Grafana dashboard in deploy/ asks only for series the hub and nodes really export.

A renamed metric would leave a panel silently empty in someone's Grafana; here it fails instead. The
names come from the exporters themselves: the hub's registry (with the dashboard history's counter),
the dcgm-exporter families of ``hub/gpu_metrics.py`` and the node's ``node/metrics.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML comes with uvicorn[standard]; no stubs

from gpupool.core.ports import FakeClock
from gpupool.hub import gpu_metrics
from gpupool.hub.history import PoolHistory
from gpupool.hub.metrics import HubMetrics
from gpupool.node import metrics as node_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gpupool-dashboard.json"
OURS = re.compile(r"\b(poolhub_\w+|gpupool_\w+|DCGM_\w+)")


def exported() -> set[str]:
    """Every sample name a scrape of the hub or a node can carry."""
    metrics = HubMetrics()
    PoolHistory(live=None, db=None, metrics=metrics, clock=FakeClock())  # type: ignore[arg-type]
    names = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    names |= {name for name, _doc, _read in gpu_metrics.FAMILIES}
    source = Path(node_metrics.__file__).read_text()
    names |= set(re.findall(r'"(gpupool_node_\w+)"', source))
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_query_names_an_exported_metric() -> None:
    names = exported()
    assert {"poolhub_miners_online", "poolhub_tasks_settled_total", "DCGM_FI_DEV_GPU_UTIL"} <= names
    dashboard = json.loads(DASHBOARD.read_text())
    asked = [(expr, m) for expr in queries(dashboard) for m in OURS.findall(expr)]
    assert asked, "no query names a gpupool metric"
    missing = sorted({m for _expr, m in asked if m not in names})
    assert not missing, f"the dashboard asks for series nobody exports: {missing}"


def test_the_dashboard_covers_pool_tasks_ledger_and_gpus() -> None:
    asked = " ".join(queries(json.loads(DASHBOARD.read_text())))
    families = ("poolhub_miners_online", "poolhub_tasks", "poolhub_ledger_", "DCGM_FI_DEV_", "gpupool_node_")
    for family in families:
        assert family in asked, family


def test_compose_provisions_prometheus_and_grafana_with_these_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("deploy/prometheus/prometheus.yml", "deploy/grafana/provisioning", DASHBOARD.name):
        assert path in mounts
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"hub:8203", "node:8080"}  # the compose services and their ports
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {uid}
