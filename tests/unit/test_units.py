"""Token fields convert exactly to micro-units or are refused (SPEC §7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool.core.units import micro_from_tokens, tokens_from_micro
from gpupool.errors import InvalidInput


@pytest.mark.parametrize(
    ("given_", "micro"),
    [
        (0.8, 800_000),
        ("0.8", 800_000),
        (0.75, 750_000),
        ("0.000001", 1),
        (2, 2_000_000),
        ("12.5", 12_500_000),
    ],
)
def test_tokens_convert_exactly(given_: object, micro: int) -> None:
    assert micro_from_tokens(given_, field="max_price") == micro


@pytest.mark.parametrize(
    "bad",
    [
        "0.0000001",
        1e-7,
        0.1 + 0.2,
        -1,
        "-1",
        "1e3",
        "",
        "abc",
        True,
        None,
        [1],
        float("nan"),
        float("inf"),
        1e16,
    ],
)
def test_bad_token_amounts_are_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidInput) as info:
        micro_from_tokens(bad, field="max_price")
    assert info.value.details["field"] == "max_price"


@given(st.integers(0, 10**15))
def test_micro_round_trips_through_a_json_number(micro: int) -> None:
    assert micro_from_tokens(tokens_from_micro(micro), field="price") == micro
