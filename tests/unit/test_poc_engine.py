"""PoC generation engine: worker processes, sharding, draining, determinism, failure and stop."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpupool.core.poc import PARAMS_TINY, Batch, compute_distances
from gpupool.errors import InvalidInput
from gpupool.pow.engine import Generator, resolve_devices, round_from_json
from gpupool.pow.rounds import PowRound

HASH = "ab" * 32
KEY = "cd" * 32
# r_target 1.45 keeps roughly half of the tiny network's nonces (its vocab is only 64).
SPEC = PowRound(HASH, 7, KEY, node_id=1, node_count=3, params=PARAMS_TINY, batch_size=16, r_target=1.45)


def _collect(gen: Generator, want: int, timeout: float = 60.0) -> list[Batch]:
    got: list[Batch] = []
    deadline = time.monotonic() + timeout
    while sum(len(b) for b in got) < want:
        assert gen.status != "error", gen.stats().error
        assert time.monotonic() < deadline, f"only {sum(len(b) for b in got)} qualifying nonces"
        got += gen.drain()
        time.sleep(0.05)
    return got


def test_batches_hold_only_this_nodes_qualifying_nonces_with_reproducible_distances() -> None:
    with Generator(SPEC, device="cpu") as gen:
        batches = _collect(gen, 40)
        stats = gen.stats()
    assert gen.status == "stopped"
    assert stats.status == "generating" and stats.gpu_count == 0
    assert stats.nonces_computed >= stats.nonces_qualified >= 40
    merged = Batch.merge(batches)
    assert all(len(b) <= SPEC.batch_size for b in batches)
    assert (merged.block_hash, merged.block_height, merged.public_key, merged.node_id) == (HASH, 7, KEY, 1)
    assert len(set(merged.nonces)) == len(merged)
    assert all(n % 3 == 1 for n in merged.nonces)
    assert all(d < SPEC.r_target for d in merged.dist)
    # Another process computed them in steps of 16; here they go in one chunk, which changes only the
    # BLAS summation order (float32 rounding), not the numbers a validator compares.
    np.testing.assert_allclose(
        merged.dist, compute_distances(HASH, KEY, merged.nonces, PARAMS_TINY), rtol=0, atol=1e-6
    )


def test_two_runs_in_fresh_processes_give_bit_identical_batches() -> None:
    runs = []
    for _ in range(2):
        with Generator(SPEC, device="cpu") as gen:
            runs.append(Batch.merge(_collect(gen, 30)))
    n = min(len(runs[0]), len(runs[1]))
    assert runs[0].nonces[:n] == runs[1].nonces[:n]
    assert runs[0].dist[:n] == runs[1].dist[:n]


def test_two_workers_split_the_nodes_shard_without_overlap() -> None:
    nonces: list[int] = []
    with Generator(SPEC, device="cpu,cpu", compute_batch=8) as gen:
        deadline = time.monotonic() + 60
        # group g of 2 on node 1 of 3 computes 1 + 3g + 6k: both residues mod 6 must show up.
        while {n % 6 for n in nonces} != {1, 4}:
            assert gen.status != "error", gen.stats().error
            assert time.monotonic() < deadline, f"residues so far: {sorted({n % 6 for n in nonces})}"
            nonces += [n for b in gen.drain() for n in b.nonces]
            time.sleep(0.05)
        per_worker = gen.stats().per_worker
    assert len(nonces) == len(set(nonces))
    assert set(per_worker) == {0, 1}


def test_a_worker_that_cannot_start_turns_the_status_to_error() -> None:
    gen = Generator(SPEC, device="cuda:7")
    gen.start()
    deadline = time.monotonic() + 60
    while gen.status != "error":
        assert time.monotonic() < deadline, "worker failure not reported"
        time.sleep(0.05)
    gen.stop()
    assert gen.status == "error" and gen.stats().error
    assert gen.drain() == []


def test_bad_devices_and_specs_are_refused() -> None:
    with pytest.raises(InvalidInput):
        resolve_devices("tpu")
    with pytest.raises(InvalidInput):
        PowRound(HASH, 1, KEY, node_id=3, node_count=3)
    with pytest.raises(InvalidInput):
        PowRound("", 1, KEY)
    assert resolve_devices("cpu") == ["cpu"]


def test_a_round_reaches_a_worker_process_unchanged() -> None:
    assert round_from_json(SPEC.to_json()) == SPEC
