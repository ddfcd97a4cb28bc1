"""Reward receipts: one hub signature per epoch over a Merkle root, one inclusion proof per payout.

Closing an epoch, the hub sorts its payouts by owner address (EIP-55 form, compared as ASCII), hashes
each into a leaf (``core/merkle.py``) and signs one NIP-01 event of kind 21006 whose content is::

    {"type": "reward_epoch", "scheme": "gpupool-merkle-sha256-v1", "epoch": E,
     "merkle_root": "<64 hex>", "payout_count": N, "paid_micro": T, "emission_micro": X}

A payout's receipt is that signed event plus the payout and its path to the root::

    {"form": "gpupool-reward-payout-v1",
     "payout": {"epoch": E, "owner": "0x…", "amount_micro": A},
     "leaf_index": i, "proof": ["<64 hex>", …], "root_event": {…kind 21006…}}

Anyone holding the hub's public key (``GET /v1/health``) checks it offline: the event's signature and
signer, then that the payout's leaf, folded with the proof, gives the signed root. Changing any field
of the payout, the index, a proof step or the event breaks one of the two. The receipt's
``transaction_signature`` is the root event's ``sig``: the one hub signature that covers every payout
of the epoch.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpupool import crypto
from gpupool.core import merkle
from gpupool.errors import SignatureRejected

RECEIPT_FORM = "gpupool-reward-payout-v1"
MERKLE_SCHEME = "gpupool-merkle-sha256-v1"
EPOCH_STATEMENT = "reward_epoch"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class EpochReceipts:
    """An epoch's signed root and its tree: hands out each payout's receipt without signing again."""

    epoch: int
    owners: list[str]  # sorted; leaf i is (owners[i], amounts[i])
    amounts: list[int]
    levels: list[list[bytes]]
    root_event: dict[str, Any]

    @property
    def root_hex(self) -> str:
        return merkle.root_of(self.levels).hex()

    @property
    def signature(self) -> str:
        """The hub's one signature over the epoch (each payout's ``transaction_signature``)."""
        return str(self.root_event["sig"])

    def index_of(self, owner: str) -> int:
        i = bisect_left(self.owners, owner)
        if i == len(self.owners) or self.owners[i] != owner:
            raise KeyError(owner)
        return i

    def receipt(self, index: int) -> dict[str, Any]:
        return {
            "form": RECEIPT_FORM,
            "payout": {"epoch": self.epoch, "owner": self.owners[index], "amount_micro": self.amounts[index]},
            "leaf_index": index,
            "proof": [h.hex() for h in merkle.proof(self.levels, index)],
            "root_event": self.root_event,
        }


def _tree(epoch: int, payouts: Sequence[tuple[str, int]]) -> tuple[list[str], list[int], list[list[bytes]]]:
    ordered = sorted(payouts)
    owners = [o for o, _ in ordered]
    if len(set(owners)) != len(owners):
        raise ValueError("an owner appears twice among an epoch's payouts")
    return owners, [a for _, a in ordered], merkle.build_levels(merkle.payout_leaves(epoch, ordered))


def seal_epoch(
    key: crypto.KeyPair,
    epoch: int,
    payouts: Sequence[tuple[str, int]],
    *,
    emission_micro: int,
    created_at: int,
) -> EpochReceipts:
    """Sign the root of an epoch's ``(owner, amount_micro)`` payouts (at least one), once."""
    owners, amounts, levels = _tree(epoch, payouts)
    statement = {
        "type": EPOCH_STATEMENT,
        "scheme": MERKLE_SCHEME,
        "epoch": epoch,
        "merkle_root": merkle.root_of(levels).hex(),
        "payout_count": len(owners),
        "paid_micro": sum(amounts),
        "emission_micro": emission_micro,
    }
    event = crypto.sign_receipt(key, statement, created_at=created_at)
    return EpochReceipts(epoch, owners, amounts, levels, event)


def reopen_epoch(epoch: int, payouts: Sequence[tuple[str, int]], root_event: dict[str, Any]) -> EpochReceipts:
    """An epoch's receipts rebuilt from its stored payouts; ValueError if they no longer give its root."""
    owners, amounts, levels = _tree(epoch, payouts)
    stated = json.loads(root_event["content"])
    if stated.get("merkle_root") != merkle.root_of(levels).hex() or stated.get("payout_count") != len(owners):
        raise ValueError(f"the stored payouts of epoch {epoch} do not match its signed root")
    return EpochReceipts(epoch, owners, amounts, levels, root_event)


def _reject(message: str, code: str = "malformed_receipt") -> SignatureRejected:
    return SignatureRejected(message, code=code)


def _int(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise _reject(f"{name} must be a non-negative integer")
    return int(value)


def verify_payout_receipt(receipt: Any, hub_pubkey: str | None = None) -> dict[str, Any]:
    """The payout and the epoch statement it is proven against, or SignatureRejected saying why not."""
    if not isinstance(receipt, Mapping) or receipt.get("form") != RECEIPT_FORM:
        raise _reject(f"not a {RECEIPT_FORM} receipt")
    payout, path = receipt.get("payout"), receipt.get("proof")
    if not isinstance(payout, Mapping) or set(payout) != {"epoch", "owner", "amount_micro"}:
        raise _reject("payout must be {epoch, owner, amount_micro}")
    if not isinstance(path, list) or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in path):
        raise _reject("proof must be a list of 64-hex hashes")
    epoch, amount = _int(payout["epoch"], "payout.epoch"), _int(payout["amount_micro"], "payout.amount_micro")
    index, owner = _int(receipt.get("leaf_index"), "leaf_index"), payout["owner"]
    statement = crypto.verify_receipt(receipt.get("root_event"), hub_pubkey)
    if statement.get("type") != EPOCH_STATEMENT or statement.get("scheme") != MERKLE_SCHEME:
        raise _reject(f"the signed event is not a {MERKLE_SCHEME} epoch statement")
    if statement.get("epoch") != epoch:
        raise _reject("the payout's epoch is not the signed epoch", code="epoch_mismatch")
    count, root = statement.get("payout_count"), statement.get("merkle_root")
    if type(count) is not int or not isinstance(root, str) or not _HEX64.fullmatch(root):
        raise _reject("the epoch statement has no valid payout_count and merkle_root")
    if not isinstance(owner, str) or not _ADDRESS.fullmatch(owner):
        raise _reject("payout.owner must be a 0x address")
    try:
        leaf = merkle.leaf_hash(merkle.payout_encoding(epoch, owner, amount))
        reached = merkle.root_from_proof(leaf, index, count, [bytes.fromhex(h) for h in path])
    except ValueError as exc:
        raise _reject(f"the inclusion proof does not fit the signed tree: {exc}", code="bad_proof") from exc
    if reached.hex() != root:
        raise _reject("the payout is not in the signed epoch (its proof leads elsewhere)", code="bad_proof")
    event = receipt["root_event"]
    return {
        **payout,
        "merkle_root": root,
        "payout_count": count,
        "hub_pubkey": event["pubkey"],
        "signed_at": event["created_at"],
    }


def verify_any(receipt: Any, hub_pubkey: str | None = None) -> dict[str, Any]:
    """A payout receipt (root + proof) or a plain hub-signed kind-21006 event, whichever this is."""
    if isinstance(receipt, Mapping) and "root_event" in receipt:
        return verify_payout_receipt(receipt, hub_pubkey)
    return crypto.verify_receipt(receipt, hub_pubkey)
