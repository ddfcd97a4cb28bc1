"""The hub's PoC recomputation choice: NumPy unless torch with CUDA is really there."""

from __future__ import annotations

import pytest

from gpupool.core import poc_torch
from gpupool.core.poc import PARAMS_TINY, compute_distances, params_named
from gpupool.errors import InvalidInput
from gpupool.hub.poc import contribution_ref, make_recompute

BLOCK_HASH = "5e" * 32


def test_cpu_recompute_is_the_numpy_network() -> None:
    recompute = make_recompute(BLOCK_HASH, PARAMS_TINY, "cpu")
    assert (
        recompute("k", [1, 2, 3]).tolist()
        == compute_distances(BLOCK_HASH, "k", [1, 2, 3], PARAMS_TINY).tolist()
    )


@pytest.mark.skipif(poc_torch.torch_available(), reason="torch is installed here")
def test_auto_falls_back_to_numpy_and_cuda_without_torch_is_refused() -> None:
    auto = make_recompute(BLOCK_HASH, PARAMS_TINY, "auto")
    assert auto("k", [4]).tolist() == compute_distances(BLOCK_HASH, "k", [4], PARAMS_TINY).tolist()
    with pytest.raises(InvalidInput, match="torch with CUDA"):
        make_recompute(BLOCK_HASH, PARAMS_TINY, "cuda")


def test_contribution_refs_fit_the_column_and_name_the_round() -> None:
    ref = contribution_ref(2**62, "ab" * 32)
    assert len(ref) <= 64 and ref.startswith(f"{2**62}:")
    assert contribution_ref(1, "ab" * 32) != contribution_ref(2, "ab" * 32)


def test_unknown_parameter_set_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="tiny"):
        params_named("v3")
