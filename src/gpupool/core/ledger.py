"""Double-entry ledger rules: accounts, postings and how they may move balances.

A posting is a set of entries whose amounts sum to zero; a balance is the sum of an account's entries.
Every amount is an integer number of micro-units (1 token = 1,000,000). Only ``system:issuance`` may go
negative; every other account's balance stays >= 0 after every posting. The store enforces that in
the same statement that moves the balances (the accounts' CHECK constraint), so a posting that would
overdraw is refused whole, whatever runs beside it.

Account names:
    user:<username>        a user's spendable balance
    0x<40 hex>             a node owner's balance (EIP-55 checksummed)
    hold:<account>         what an account has in escrow (its ``held`` figure)
    system:issuance        source of minted money (the only account allowed below zero)
    system:fees            fees the pool keeps
    system:rewards         the reward pool that epochs pay out of
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from gpupool.errors import InvalidInput

ISSUANCE = "system:issuance"
FEES = "system:fees"
REWARD_POOL = "system:rewards"
SYSTEM_ACCOUNTS = (ISSUANCE, FEES, REWARD_POOL)

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class AccountType(StrEnum):
    USER = "user"
    OWNER = "owner"
    HOLD = "hold"
    SYSTEM = "system"


class PostingKind(StrEnum):
    TRANSFER = "transfer"
    MINT = "mint"
    ESCROW_HOLD = "escrow_hold"
    SETTLEMENT = "settlement"
    REWARD = "reward"


class Entry(NamedTuple):
    """One leg of a posting (a tuple: made twice or more for every task, and built in C)."""

    account: str
    amount_micro: int


@dataclass(frozen=True, slots=True)
class Posting:
    """A balanced set of entries, the only way money moves."""

    kind: PostingKind
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise InvalidInput("a posting needs at least two entries")
        total = 0
        accounts = set()
        for entry in self.entries:  # one pass: every task makes two postings
            if type(entry.amount_micro) is not int:  # not a bool, a float or an int subclass
                raise InvalidInput("a posting entry is an integer number of micro-units", field="amount")
            if entry.amount_micro == 0:
                raise InvalidInput("a posting entry may not be zero")
            total += entry.amount_micro
            accounts.add(entry.account)
        if total != 0:
            raise InvalidInput("a posting's entries must sum to zero")
        if len(accounts) != len(self.entries):
            raise InvalidInput("a posting may touch each account once")

    def deltas(self) -> dict[str, int]:
        return {e.account: e.amount_micro for e in self.entries}


def username_account(username: str) -> str:
    return f"user:{username}"


def hold_account(account: str) -> str:
    return f"hold:{account}"


def validate_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise InvalidInput(
            "username must be 2-64 characters: lowercase letters, digits, '_', '.', '-'", field="username"
        )
    return username


def account_type(account: str) -> AccountType:
    """Classify an account name, or raise InvalidInput when it is not one we issue."""
    if account.startswith("user:") and _USERNAME.match(account[5:]):
        return AccountType.USER
    if _ADDRESS.match(account):
        return AccountType.OWNER
    if account.startswith("hold:") and account_type(account[5:]) in (AccountType.USER, AccountType.OWNER):
        return AccountType.HOLD
    if account in SYSTEM_ACCOUNTS:
        return AccountType.SYSTEM
    raise InvalidInput(f"not an account name: {account!r}", field="account")


def check_amount(amount_micro: int, max_micro: int) -> int:
    # bool is an int subclass; True must not move one micro-unit.
    if isinstance(amount_micro, bool) or not isinstance(amount_micro, int):
        raise InvalidInput("amount must be an integer number of micro-units", field="amount")
    if amount_micro <= 0:
        raise InvalidInput("amount must be greater than zero", field="amount")
    if amount_micro > max_micro:
        raise InvalidInput(f"amount must be at most {max_micro}", field="amount")
    return amount_micro


def transfer(source: str, destination: str, amount_micro: int) -> Posting:
    if source == destination:
        raise InvalidInput("cannot transfer to the same account", field="to")
    return Posting(PostingKind.TRANSFER, (Entry(source, -amount_micro), Entry(destination, amount_micro)))


def mint(destination: str, amount_micro: int) -> Posting:
    return Posting(PostingKind.MINT, (Entry(ISSUANCE, -amount_micro), Entry(destination, amount_micro)))


def escrow_hold(account: str, amount_micro: int) -> Posting:
    return Posting(
        PostingKind.ESCROW_HOLD, (Entry(account, -amount_micro), Entry(hold_account(account), amount_micro))
    )


def settlement(account: str, held_micro: int, payee: str, charge_micro: int, fee_micro: int = 0) -> Posting:
    """Release an escrow hold: ``charge`` to the payee (less ``fee`` to the pool), the rest to the user."""
    for name, value in (("held_micro", held_micro), ("charge_micro", charge_micro), ("fee_micro", fee_micro)):
        if type(value) is not int:
            raise InvalidInput(f"{name} must be an integer number of micro-units", field=name)
    if not 0 <= fee_micro <= charge_micro <= held_micro:
        raise InvalidInput("settlement must satisfy 0 <= fee <= charge <= held")
    legs = [
        Entry(hold_account(account), -held_micro),
        Entry(payee, charge_micro - fee_micro),
        Entry(FEES, fee_micro),
        Entry(account, held_micro - charge_micro),
    ]
    return Posting(PostingKind.SETTLEMENT, tuple(e for e in legs if e.amount_micro != 0))
