"""Exact products of a float quantity (seconds) and integer rates, rounded once at the end.

Money and scores are integers; the seconds they are computed from are floats. ``Fraction(seconds)``
is exact but costs ~10 µs a call, and every settled task makes several; the float's own integer ratio
(a power-of-two denominator) gives the same exact result in integer arithmetic.
"""

from __future__ import annotations


def floor_mul(value: float, numerator: int, denominator: int = 1) -> int:
    """``floor(value * numerator / denominator)``, exactly (``value`` finite, ``denominator`` > 0)."""
    top, bottom = value.as_integer_ratio()
    return (top * numerator) // (bottom * denominator)


def ceil_mul(value: float, numerator: int, denominator: int = 1) -> int:
    """``ceil(value * numerator / denominator)``, exactly (``value`` finite, ``denominator`` > 0)."""
    top, bottom = value.as_integer_ratio()
    return -((-top * numerator) // (bottom * denominator))
