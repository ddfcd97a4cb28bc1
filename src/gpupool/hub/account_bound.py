"""Account-bound nodes (SPEC §8): nodes that cannot sign, admitted on an account's credential.

AITBC's miners hold an owner API key; HiveMind's workers log in as a user. Neither has a key of its
own, so the node is bound to the account whose credential admitted it: that account is paid for its
work, and only that credential (the same API key, the same user) may speak for it afterwards. The
hub never bills from what such a node reports: billing runs from the hub's own clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpupool import crypto
from gpupool.core.model import Identity
from gpupool.errors import Conflict, InvalidInput
from gpupool.store.registry_repo import MinerRecord

_USER_ACCOUNT = re.compile(r"^user:[A-Za-z0-9_.\-]{1,64}$")

PENDING = "pending"


@dataclass(frozen=True, slots=True)
class AccountBinding:
    """Who vouches for an account-bound node.

    ``owner`` is the account paid for its work (``0x…`` or ``user:<name>``); ``credential`` is what
    the node answers to from now on: the id of the API key, or the username whose token admitted it.
    ``admitted`` says whether the credential itself admits a node in allowlist mode (an admin's key).
    """

    owner: str
    identity: Identity
    credential: str
    admitted: bool = False


def normalize_account(owner: str, *, field: str = "owner") -> str:
    """A node owner: an EIP-55 address, or a ``user:<name>`` ledger account."""
    text = owner.strip()
    if text.startswith("user:"):
        if not _USER_ACCOUNT.match(text):
            raise InvalidInput("a user account is user:<username>", field=field)
        return text
    return crypto.normalize_owner_address(text, field=field)


def check_rebind(existing: MinerRecord | None, binding: AccountBinding) -> None:
    """Whether an account-bound registration may take this ``miner_id``.

    A signed node is never taken over by a credential; another account's node is never rebound.
    The same account may re-register (with a new key of its own, after rotating the old one).
    """
    if existing is None:
        return
    if existing.identity == Identity.SIGNED.value:
        raise Conflict(f"miner_id {existing.miner_id} belongs to a signed node", code="miner_id_taken")
    if existing.owner != binding.owner or existing.identity != binding.identity.value:
        raise Conflict(f"miner_id {existing.miner_id} belongs to another account", code="miner_id_taken")
