"""Properties of the pure ledger rules: postings balance, no sequence of operations overdraws."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.core import ledger
from gpupool.errors import InvalidInput, PaymentRequired

USERS = [f"user:u{i}" for i in range(5)]


def test_posting_must_balance() -> None:
    with pytest.raises(InvalidInput):
        ledger.Posting(ledger.PostingKind.TRANSFER, (ledger.Entry("user:a1", -5), ledger.Entry("user:b1", 4)))


def test_posting_refuses_zero_legs_and_repeated_accounts() -> None:
    with pytest.raises(InvalidInput):
        ledger.Posting(ledger.PostingKind.TRANSFER, (ledger.Entry("user:a1", 0), ledger.Entry("user:b1", 0)))
    with pytest.raises(InvalidInput):
        ledger.transfer("user:a1", "user:a1", 5)


@pytest.mark.parametrize("amount", [0, -1, True, 1.0, "5", 10**16])
def test_check_amount_refuses_non_positive_non_integer_and_huge(amount: object) -> None:
    with pytest.raises(InvalidInput):
        ledger.check_amount(amount, 10**15)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("user:alice", ledger.AccountType.USER),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", ledger.AccountType.OWNER),
        ("hold:user:alice", ledger.AccountType.HOLD),
        ("system:fees", ledger.AccountType.SYSTEM),
    ],
)
def test_account_types(name: str, kind: ledger.AccountType) -> None:
    assert ledger.account_type(name) is kind


@pytest.mark.parametrize(
    "name", ["alice", "user:", "hold:system:fees", "system:other", "0x123", "hold:hold:user:a"]
)
def test_unknown_account_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        ledger.account_type(name)


def test_settlement_splits_hold_into_charge_fee_and_refund() -> None:
    posting = ledger.settlement(
        "user:alice", held_micro=1_000, payee="0x" + "ab" * 20, charge_micro=600, fee_micro=60
    )
    assert posting.deltas() == {
        "hold:user:alice": -1_000,
        "0x" + "ab" * 20: 540,
        "system:fees": 60,
        "user:alice": 400,
    }
    with pytest.raises(InvalidInput):
        ledger.settlement("user:alice", held_micro=100, payee="0x" + "ab" * 20, charge_micro=101)


operation = st.one_of(
    st.tuples(st.just("mint"), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("transfer"), st.sampled_from(USERS), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("hold"), st.sampled_from(USERS), st.integers(1, 10_000)),
    st.tuples(st.just("settle"), st.sampled_from(USERS), st.integers(0, 100), st.integers(0, 100)),
)


def _posting(op: tuple[object, ...], balances: dict[str, int]) -> ledger.Posting | None:
    match op:
        case ("mint", to, amount):
            return ledger.mint(str(to), int(amount))  # type: ignore[call-overload]
        case ("transfer", src, dst, amount) if src != dst:
            return ledger.transfer(str(src), str(dst), int(amount))  # type: ignore[call-overload]
        case ("hold", who, amount):
            return ledger.escrow_hold(str(who), int(amount))  # type: ignore[call-overload]
        case ("settle", who, charge_pct, fee_pct):
            held = balances.get(ledger.hold_account(str(who)), 0)
            if held == 0:
                return None
            charge = held * int(charge_pct) // 100  # type: ignore[call-overload]
            fee = charge * int(fee_pct) // 100  # type: ignore[call-overload]
            return ledger.settlement(str(who), held, "0x" + "cd" * 20, charge, fee)
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_no_sequence_of_operations_overdraws_or_unbalances(ops: list[tuple[object, ...]]) -> None:
    balances: dict[str, int] = {}
    applied: list[ledger.Posting] = []
    for op in ops:
        posting = _posting(op, balances)
        if posting is None:
            continue
        try:
            balances = ledger.apply(balances, posting)
        except PaymentRequired:
            continue  # refused whole: balances unchanged
        applied.append(posting)
        assert sum(e.amount_micro for e in posting.entries) == 0
    assert ledger.is_balanced(applied)
    assert sum(balances.values()) == 0
    assert all(v >= 0 for k, v in balances.items() if k != ledger.ISSUANCE)
