"""The integer-ratio arithmetic behind charges, holds and scores equals exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from gpupool.core import exact

seconds = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False) | st.integers(
    0, 10**9
)


@given(seconds, st.integers(0, 10**18), st.integers(1, 10**9))
def test_floor_and_ceil_of_a_product_are_those_of_the_exact_rational(
    value: float, numerator: int, denominator: int
) -> None:
    exact_value = Fraction(value) * numerator / denominator
    assert exact.floor_mul(value, numerator, denominator) == math.floor(exact_value)
    assert exact.ceil_mul(value, numerator, denominator) == math.ceil(exact_value)


def test_the_classic_float_traps_are_not_rounded_away() -> None:
    # 0.1 s is a little more than a tenth: at 10,000 per ksec that is just over 1 micro-unit.
    assert (exact.floor_mul(0.1, 10_000, 1000), exact.ceil_mul(0.1, 10_000, 1000)) == (1, 2)
    assert exact.floor_mul(0.5, 3, 1) == 1 and exact.ceil_mul(0.5, 3, 1) == 2


def test_without_a_denominator_the_product_is_rounded_as_it_is() -> None:
    assert exact.floor_mul(2.5, 3) == 7 and exact.ceil_mul(2.5, 3) == 8
