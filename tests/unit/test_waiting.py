"""``waiting_reason``: a queued task's one sentence, from the matcher's own rejection counts."""

from __future__ import annotations

from gpupool.core import matching
from gpupool.core.waiting import waiting_reason


def spec(miner_id: str, *, gpus: int = 0, price: int = 1_000_000) -> matching.NodeSpec:
    return matching.NodeSpec(
        miner_id,
        "addr",
        "http",
        [80.0] * gpus,
        ["NVIDIA H100"] * gpus,
        64.0,
        "eu",
        price,
        1,
        [],
        [],
        0.5,
        None,
    )


def online(table: matching.NodeTable, *specs: matching.NodeSpec) -> None:
    for s in specs:
        table.upsert(s)
        table.heartbeat(s.miner_id, 1.0, queue_len=0)


def reason_for(table: matching.NodeTable, req: dict[str, object], max_price: int = 10**9) -> str:
    """What a task with ``req`` and this price cap is told, exactly as the hub asks the table."""
    result = table.match(matching.Requirements.from_mapping(req), matching.Hints(max_price=max_price), 1)
    return waiting_reason(len(table), len(result.candidates), result.rejected, req)


def test_each_filter_is_named_in_words() -> None:
    table = matching.NodeTable()
    assert reason_for(table, {}) == "no node has registered with the hub"
    online(table, spec("cpu"))
    assert reason_for(table, {"gpu_count": 1}) == "no online node has a GPU"
    assert reason_for(table, {"gpu_count": 4}) == "no online node has 4 GPUs"
    assert reason_for(table, {}, max_price=10) == "price cap below every node's price"
    assert reason_for(table, {}).startswith("waiting for a free slot: 1 node")
    table.set_online("cpu", False)
    assert reason_for(table, {}) == "no node online"


def test_mixed_reasons_are_counted_per_node() -> None:
    table = matching.NodeTable()
    online(
        table,
        spec("cpu"),
        spec("h100-cheap", gpus=1, price=500_000),
        spec("h100-dear", gpus=1, price=9_000_000),
    )
    table.upsert(spec("gone", gpus=8))  # registered, never heard from: offline
    said = reason_for(table, {"gpu_count": 1}, max_price=400_000)
    assert said == "no online node can take it: lacks a GPU (1 node), price above the cap (2 nodes)"


def test_a_busy_pool_and_a_missing_region_or_vram_read_as_such() -> None:
    counts = {"busy": 3, "offline": 1}
    assert waiting_reason(4, 0, counts, {}) == "every matching node is busy"
    assert waiting_reason(1, 0, {"region": 1}, {"region": "us"}) == "no online node in region us"
    vram = waiting_reason(1, 0, {"vram": 1}, {"min_vram_gb": 80})
    assert vram == "no online node has 1 GPU(s) with 80 GB"
