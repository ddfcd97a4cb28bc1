"""The core's money functions take integers only: a bool or a float is refused, cached or not."""

from __future__ import annotations

import pytest

from gpupool import wire
from gpupool.core import ledger, scheduling
from gpupool.errors import InvalidInput


def test_hold_amount_refuses_a_bool_even_after_the_int_was_cached() -> None:
    assert scheduling.hold_amount(1, 10) == 1  # cached now under (1, 10)
    for args in ((True, 10), (1, True), (1, 10, True), (1.0, 10), (1, 10, 1.0)):
        with pytest.raises(InvalidInput):
            scheduling.hold_amount(*args)
    assert scheduling.hold_amount(1, 10) == 1


def test_charge_and_settlement_refuse_bools_and_floats() -> None:
    assert scheduling.charge_for_usage(1000, 1.0) == 1
    for price in (True, 1000.0):
        with pytest.raises(InvalidInput):
            scheduling.charge_for_usage(price, 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        scheduling.settle(scheduling.Outcome.SUCCEEDED, True, 1)
    with pytest.raises(InvalidInput):
        ledger.settlement("user:a", 10, "user:b", 1.0)  # type: ignore[arg-type]


def test_a_posting_holds_integer_micro_units_only() -> None:
    assert ledger.transfer("user:a", "user:b", 5).deltas() == {"user:a": -5, "user:b": 5}
    for amount in (True, 5.0):
        with pytest.raises(InvalidInput):
            ledger.transfer("user:a", "user:b", amount)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            ledger.mint("user:a", amount)  # type: ignore[arg-type]


def test_exit_codes_and_usage_figures_fit_their_columns() -> None:
    view = scheduling.new_task("t1", price_cap_micro_per_ksec=1000, submitted_at=0.0, timeout_sec=10.0)
    running = scheduling.assign(view, "n1", 1.0)
    for code in (2**31, -(2**31) - 1, 2**70, True):
        with pytest.raises(InvalidInput) as info:
            scheduling.finish(running, code, 2.0, node_id="n1")
        assert info.value.details["field"] == "exit_code"
    assert scheduling.finish(running, 2**31 - 1, 2.0, node_id="n1").exit_code == 2**31 - 1
    # Usage figures are checked where they enter, by the one wire contract.
    for bad in (1e16, 10**400, float("nan"), float("inf"), -1, True, "1"):
        with pytest.raises(InvalidInput) as info:
            wire.decode(wire.Usage, {"gpu_seconds": bad})
        assert info.value.details["field"] == "gpu_seconds"
    assert wire.decode(wire.Usage, {"gpu_seconds": 1e9}).gpu_seconds == 1e9
