"""The pure ledger rules: postings balance, accounts are named as we issue them, settlements split holds.

That no sequence of postings overdraws is a property of the store that enforces it, tested there
(``tests/integration/test_ledger_property.py``)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from gpupool.core import ledger
from gpupool.errors import InvalidInput


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
        ("user:ab", ledger.AccountType.USER),  # the shortest username
        ("hold:user:ab", ledger.AccountType.HOLD),
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


def test_posting_deltas_are_its_entries() -> None:
    posting = ledger.transfer("user:a1", "user:b1", 7)
    assert posting.deltas() == {"user:a1": -7, "user:b1": 7}
    assert posting.kind is ledger.PostingKind.TRANSFER
    hold = ledger.escrow_hold("user:a1", 5)
    assert hold.deltas() == {"user:a1": -5, "hold:user:a1": 5} and hold.kind is ledger.PostingKind.ESCROW_HOLD
    mint = ledger.mint("user:a1", 9)
    assert mint.deltas() == {ledger.ISSUANCE: -9, "user:a1": 9} and mint.kind is ledger.PostingKind.MINT


def test_a_settlement_without_a_charge_gives_the_hold_back_whole() -> None:
    posting = ledger.settlement("user:alice", held_micro=1_000, payee="user:alice", charge_micro=0)
    assert posting.deltas() == {"hold:user:alice": -1_000, "user:alice": 1_000}
    assert posting.kind is ledger.PostingKind.SETTLEMENT
    for fee, charge, held in ((-1, 0, 5), (2, 1, 5)):
        with pytest.raises(InvalidInput):
            ledger.settlement(
                "user:alice", held_micro=held, payee="user:bob", charge_micro=charge, fee_micro=fee
            )


@pytest.mark.parametrize("amount", [1, 10**15])
def test_check_amount_takes_amounts_in_range(amount: int) -> None:
    assert ledger.check_amount(amount, 10**15) == amount


def test_names_of_accounts() -> None:
    assert ledger.username_account("bob") == "user:bob" and ledger.hold_account("user:bob") == "hold:user:bob"
    assert ledger.validate_username("bob-1.x") == "bob-1.x"
    for bad in ("B", "a", "-bob", "x" * 65):
        with pytest.raises(InvalidInput):
            ledger.validate_username(bad)


def test_a_posting_cannot_be_changed_once_made() -> None:
    posting = ledger.transfer("user:a1", "user:b1", 7)
    with pytest.raises(FrozenInstanceError):
        posting.entries = (ledger.Entry("user:a1", -700), ledger.Entry("user:b1", 700))  # type: ignore[misc]
