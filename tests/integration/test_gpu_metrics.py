"""Per-GPU telemetry on /metrics under dcgm-exporter's names, from the recorded loaded H100."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from gpupool.core.ports import FakeClock
from gpupool.node.gpu import heartbeat_gpus, read_inventory, read_telemetry, registration_gpus
from gpupool.node.nvml_replay import ReplayNvml
from tests.conftest import LiveHub
from tests.simnode import SimNode

LOADED = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h100-loaded"


def _sample(text: str, name: str, miner: str) -> float | None:
    m = re.search(rf'^{name}\{{([^}}]*miner="{miner}"[^}}]*)\}} (\S+)$', text, re.M)
    return float(m.group(2)) if m else None


async def test_loaded_h100_heartbeat_shows_under_dcgm_names_until_the_node_leaves(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    nvml = ReplayNvml(LOADED)
    node = SimNode(hub, clock, "h100-box", gpus=registration_gpus(read_inventory(nvml)))
    await node.connect()
    gpus = heartbeat_gpus(read_telemetry(nvml))
    await node.ws.send(json.dumps({"ts": clock.now(), "queue_len": 0, "gpus": gpus}))

    text = ""
    for _ in range(100):  # the beat is handled asynchronously on the hub's socket task
        text = (await hub.http.get("/metrics")).text
        if _sample(text, "DCGM_FI_DEV_GPU_UTIL", "h100-box") is not None:
            break
        await asyncio.sleep(0.02)
    g = gpus[0]
    assert _sample(text, "DCGM_FI_DEV_GPU_UTIL", "h100-box") == g["util_pct"] >= 90  # under full load
    assert _sample(text, "DCGM_FI_DEV_FB_USED", "h100-box") == g["mem_used_mb"]
    assert _sample(text, "DCGM_FI_DEV_FB_FREE", "h100-box") == g["mem_total_mb"] - g["mem_used_mb"]
    assert _sample(text, "DCGM_FI_DEV_POWER_USAGE", "h100-box") == g["power_w"]
    assert _sample(text, "DCGM_FI_DEV_GPU_TEMP", "h100-box") == g["temp_c"]
    assert 'modelName="NVIDIA H100 80GB HBM3"' in text and 'gpu="0"' in text

    resp = await hub.http.post("/v1/miners/logout", json={"session_token": node.token})
    assert resp.status_code == 204, resp.text
    for _ in range(100):
        text = (await hub.http.get("/metrics")).text
        if _sample(text, "DCGM_FI_DEV_GPU_UTIL", "h100-box") is None:
            break
        await asyncio.sleep(0.02)
    assert _sample(text, "DCGM_FI_DEV_GPU_UTIL", "h100-box") is None
