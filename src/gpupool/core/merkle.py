"""Merkle trees over an epoch's payouts: one hub signature covers them all, each payout proves its place.

Hashing (RFC 6962-style domain separation, so a leaf can never pass for an inner node and back):

- leaf  = sha256(0x00 || payout encoding)
- inner = sha256(0x01 || left || right)
- a level with an odd number of nodes carries its last node up unchanged (it is never paired with
  itself: duplicating it would let two different payout lists share a root).

The shape of the tree is fixed by the number of leaves, which the signed root statement carries, so a
proof is just the sibling hashes from the leaf up; its length and sides follow from the leaf's index.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def payout_encoding(epoch: int, owner: str, amount_micro: int) -> bytes:
    """The canonical bytes of one payout: its JSON with sorted keys and no spaces (``canonical_json``).

    Written out by hand because the hub encodes 10^5 of them per epoch; the fields are an integer, an
    address (hex, nothing to escape) and an integer, so this is exactly ``canonical_json`` of the dict.
    """
    if type(epoch) is not int or type(amount_micro) is not int or not _ADDRESS.fullmatch(owner):
        raise ValueError("a payout is (int epoch, 0x-address owner, int amount_micro)")
    return f'{{"amount_micro":{amount_micro},"epoch":{epoch},"owner":"{owner}"}}'.encode("ascii")


def leaf_hash(encoding: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + encoding).digest()


def payout_leaves(epoch: int, payouts: Sequence[tuple[str, int]]) -> list[bytes]:
    """Leaf hashes of ``(owner, amount_micro)`` payouts, in the order given."""
    sha = hashlib.sha256
    if type(epoch) is not int:
        raise ValueError("epoch must be an integer")
    out = []
    for owner, amount in payouts:
        if type(amount) is not int or not _ADDRESS.fullmatch(owner):
            raise ValueError(f"bad payout ({owner!r}, {amount!r})")
        out.append(
            sha(b'\x00{"amount_micro":%d,"epoch":%d,"owner":"%s"}' % (amount, epoch, owner.encode())).digest()
        )
    return out


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def build_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, the one-element root level last."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    sha = hashlib.sha256
    levels = [list(leaves)]
    level = levels[0]
    while len(level) > 1:
        paired = len(level) - len(level) % 2
        nxt = [sha(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, paired, 2)]
        if paired != len(level):
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def root_of(levels: Sequence[Sequence[bytes]]) -> bytes:
    return levels[-1][0]


def proof(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (levels where the node has none are skipped)."""
    if not 0 <= index < len(levels[0]):
        raise IndexError(f"leaf {index} is not in a tree of {len(levels[0])} leaves")
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def root_from_proof(leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes:
    """The root a proof leads to; ValueError when the proof does not fit a tree of ``count`` leaves."""
    if not 0 <= index < count:
        raise ValueError(f"leaf index {index} is outside a tree of {count} leaves")
    node, width, used = leaf, count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used == len(path):
                raise ValueError("the proof is too short for this tree")
            other = path[used]
            used += 1
            if len(other) != 32:
                raise ValueError("a proof step is not a 32-byte hash")
            node = node_hash(other, node) if index & 1 else node_hash(node, other)
        index //= 2
        width = (width + 1) // 2
    if used != len(path):
        raise ValueError("the proof is longer than this tree is deep")
    return node
