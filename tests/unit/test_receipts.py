"""Epoch receipts: one signed Merkle root, a proof per payout, and every forgery caught offline."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool import crypto, receipts
from gpupool.core import merkle
from gpupool.errors import SignatureRejected

HUB = crypto.KeyPair.from_hex("11" * 32)
NOW = 1_800_000_000


def owner(i: int) -> str:
    """A mixed-case EIP-55 address (hex letters everywhere, so its case is part of its spelling)."""
    return crypto.to_checksum_address("0x" + hashlib.sha256(str(i).encode()).hexdigest()[:40])


def sealed(n: int, epoch: int = 7) -> receipts.EpochReceipts:
    payouts = [(owner(i * 7919 % 1_000_003), 1_000_000 + i * 13) for i in range(n)]
    return receipts.seal_epoch(HUB, epoch, payouts, emission_micro=10**9, created_at=NOW)


# --- the tree ---------------------------------------------------------------------------------------


def test_payout_encoding_is_the_canonical_json_of_the_payout() -> None:
    payout = {"epoch": 12, "owner": owner(5), "amount_micro": 1_234_567}
    expected = crypto.canonical_json(payout).encode()
    assert merkle.payout_encoding(12, owner(5), 1_234_567) == expected
    assert merkle.payout_leaves(12, [(owner(5), 1_234_567)]) == [merkle.leaf_hash(expected)]


@pytest.mark.parametrize(
    ("epoch", "who", "amount"),
    [(1, "0xnot-an-address", 5), (1, owner(1) + "\n", 5), (1, owner(1), 5.0), ("1", owner(1), 5)],
)
def test_payout_encoding_refuses_what_would_not_be_canonical(epoch: Any, who: str, amount: Any) -> None:
    with pytest.raises(ValueError):
        merkle.payout_encoding(epoch, who, amount)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_leaf_proves_into_the_root_of_any_size_tree(count: int, data: st.DataObject) -> None:
    leaves = [bytes([i % 256, i // 256]) * 16 for i in range(count)]
    levels = merkle.build_levels(leaves)
    index = data.draw(st.integers(0, count - 1))
    path = merkle.proof(levels, index)
    assert merkle.root_from_proof(leaves[index], index, count, path) == merkle.root_of(levels)
    if count > 1:  # the same proof at another index, or for another tree size, does not fit
        other = (index + 1) % count
        with pytest.raises(ValueError):
            if merkle.root_from_proof(leaves[index], other, count, path) != merkle.root_of(levels):
                raise ValueError("leads elsewhere")


def test_odd_levels_carry_their_last_node_up_instead_of_duplicating_it() -> None:
    a, b, c = (bytes([x]) * 32 for x in (1, 2, 3))
    # With duplication, [a, b, c] and [a, b, c, c] would share a root.
    assert merkle.root_of(merkle.build_levels([a, b, c])) == merkle.node_hash(merkle.node_hash(a, b), c)
    assert merkle.root_of(merkle.build_levels([a, b, c])) != merkle.root_of(merkle.build_levels([a, b, c, c]))
    assert merkle.proof(merkle.build_levels([a, b, c]), 2) == [merkle.node_hash(a, b)]


def test_a_leaf_cannot_pass_for_an_inner_node() -> None:
    leaves = [bytes([x]) * 32 for x in range(4)]
    levels = merkle.build_levels(leaves)
    # Presenting the inner node (a|b) as a "leaf" of a two-leaf tree gives another hash: prefixes differ.
    inner = levels[1][0]
    assert merkle.root_from_proof(merkle.leaf_hash(leaves[0] + leaves[1]), 0, 2, [levels[1][1]]) != inner
    with pytest.raises(ValueError, match=r"too short|longer"):
        merkle.root_from_proof(leaves[0], 0, 4, [leaves[1]])
    with pytest.raises(ValueError, match="longer"):
        merkle.root_from_proof(leaves[0], 0, 4, [*merkle.proof(levels, 0), leaves[2]])


# --- receipts -----------------------------------------------------------------------------------------


def test_each_payout_receipt_verifies_offline_with_one_signature_for_the_epoch() -> None:
    epoch = sealed(37)
    assert len({epoch.receipt(i)["root_event"]["sig"] for i in range(37)}) == 1
    for i in range(37):
        receipt = json.loads(json.dumps(epoch.receipt(i)))  # as it travels: plain JSON
        checked = receipts.verify_any(receipt, HUB.npub)
        assert (checked["owner"], checked["amount_micro"], checked["epoch"]) == (
            epoch.owners[i],
            epoch.amounts[i],
            7,
        )
        assert checked["merkle_root"] == epoch.root_hex and checked["payout_count"] == 37
    statement = json.loads(epoch.root_event["content"])
    assert statement["paid_micro"] == sum(epoch.amounts) and statement["emission_micro"] == 10**9
    assert epoch.owners == sorted(epoch.owners)


def _forge_amount(r: dict[str, Any]) -> None:
    r["payout"]["amount_micro"] += 1


def _forge_other_owner(r: dict[str, Any]) -> None:
    r["payout"]["owner"] = owner(999_999)


def _forge_lowercased_owner(r: dict[str, Any]) -> None:
    r["payout"]["owner"] = r["payout"]["owner"].lower()


def _forge_epoch(r: dict[str, Any]) -> None:
    r["payout"]["epoch"] = 8


def _forge_index(r: dict[str, Any]) -> None:
    r["leaf_index"] = (r["leaf_index"] + 1) % 9


def _forge_proof_step(r: dict[str, Any]) -> None:
    r["proof"][0] = ("0" if r["proof"][0][0] != "0" else "1") + r["proof"][0][1:]


def _forge_proof_dropped(r: dict[str, Any]) -> None:
    r["proof"].pop()


def _forge_proof_extended(r: dict[str, Any]) -> None:
    r["proof"].append("ab" * 32)


def _forge_root_content(r: dict[str, Any]) -> None:
    content = json.loads(r["root_event"]["content"])
    content["payout_count"] = 10
    r["root_event"]["content"] = crypto.canonical_json(content)


def _forge_resigned_by_another_key(r: dict[str, Any]) -> None:
    content = json.loads(r["root_event"]["content"])
    content["merkle_root"] = "00" * 32
    r["root_event"] = crypto.sign_receipt(crypto.KeyPair.generate(), content, created_at=NOW)


def _forge_extra_field(r: dict[str, Any]) -> None:
    r["payout"]["bonus"] = 1


def _forge_not_a_receipt(r: dict[str, Any]) -> None:
    r["form"] = "something-else"


def _forge_negative_amount(r: dict[str, Any]) -> None:
    r["payout"]["amount_micro"] = -1


FORGERIES = [
    _forge_amount,
    _forge_other_owner,
    _forge_lowercased_owner,
    _forge_epoch,
    _forge_index,
    _forge_proof_step,
    _forge_proof_dropped,
    _forge_proof_extended,
    _forge_root_content,
    _forge_resigned_by_another_key,
    _forge_extra_field,
    _forge_not_a_receipt,
    _forge_negative_amount,
]


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__.removeprefix("_forge_"))
def test_a_forged_or_altered_receipt_fails(forge: Any) -> None:
    good = sealed(9).receipt(4)
    receipts.verify_payout_receipt(good, HUB.pubkey)
    bad = copy.deepcopy(good)
    forge(bad)
    with pytest.raises(SignatureRejected):
        receipts.verify_any(bad, HUB.pubkey)


def test_a_genuine_receipt_of_another_hub_fails_against_this_hub() -> None:
    other = receipts.seal_epoch(
        crypto.KeyPair.generate(), 7, [(owner(1), 5)], emission_micro=5, created_at=NOW
    )
    receipts.verify_any(other.receipt(0))  # it is well signed, by someone
    with pytest.raises(SignatureRejected, match="not signed by this hub"):
        receipts.verify_any(other.receipt(0), HUB.pubkey)


def test_a_single_payout_epoch_has_an_empty_proof() -> None:
    one = receipts.seal_epoch(HUB, 3, [(owner(1), 5)], emission_micro=5, created_at=NOW)
    assert (
        one.receipt(0)["proof"] == [] and receipts.verify_any(one.receipt(0), HUB.pubkey)["amount_micro"] == 5
    )


def test_reopening_from_stored_payouts_rebuilds_the_same_receipts_or_refuses() -> None:
    epoch = sealed(20)
    stored = list(zip(epoch.owners, epoch.amounts, strict=True))[::-1]  # any order from the database
    again = receipts.reopen_epoch(7, stored, epoch.root_event)
    assert [again.receipt(i) for i in range(20)] == [epoch.receipt(i) for i in range(20)]
    assert again.index_of(epoch.owners[5]) == 5
    tampered = [(o, a + 1 if i == 3 else a) for i, (o, a) in enumerate(stored)]
    with pytest.raises(ValueError, match="do not match its signed root"):
        receipts.reopen_epoch(7, tampered, epoch.root_event)
    with pytest.raises(ValueError, match="twice"):
        receipts.seal_epoch(HUB, 7, [(owner(1), 1), (owner(1), 2)], emission_micro=3, created_at=NOW)
