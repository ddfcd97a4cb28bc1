"""Node and hub identity: secp256k1 keys in Nostr form, NIP-01 events, BIP-340 signatures, owner addresses.

Every signed message in gpupool is a Nostr event (SPEC §2). Verification checks, in this order, the
shape, the id, the signature, the kind and the clock, and refuses with a stable reason code so that a
node operator can tell a clock problem from a key problem. Replay is the caller's job: it needs storage.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bech32
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly
from Crypto.Hash import keccak

from gpupool.errors import InvalidInput, SignatureRejected

KIND_REGISTRATION = 21000
KIND_SESSION_OPEN = 21001
KIND_TASK_RESULT = 21002
KIND_USAGE_REPORT = 21003
KIND_POC_BATCH = 21004
KIND_DELEGATION_RECEIPT = 21005
KIND_HUB_RECEIPT = 21006

SIG_FIELD = "sig_event"
DEFAULT_MAX_SKEW_S = 120

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ANYHEX = re.compile(r"^[0-9a-fA-F]+$")
MAX_POC_KEY_CHARS = 100
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


# --------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A secret key and its x-only public key; ``repr`` never shows the secret."""

    secret: bytes
    _key: PrivateKey = field(init=False, repr=False, compare=False)
    _pubkey: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise InvalidInput("a secret key is 32 bytes", field="key")
        try:
            key = PrivateKey(self.secret)
        except ValueError as exc:
            raise InvalidInput("the secret key is not a valid secp256k1 scalar", field="key") from exc
        # Built once: deriving the public key costs more than a signature.
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_pubkey", key.public_key_xonly.format().hex())

    def __repr__(self) -> str:
        return f"KeyPair(pubkey={self.pubkey})"

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(PrivateKey().secret)

    @classmethod
    def from_hex(cls, secret_hex: str) -> KeyPair:
        text = secret_hex.strip().lower()
        if not _HEX64.match(text):
            raise InvalidInput("a secret key is 64 hex characters", field="key")
        return cls(bytes.fromhex(text))

    @property
    def secret_hex(self) -> str:
        return self.secret.hex()

    @property
    def pubkey(self) -> str:
        """The 32-byte x-only public key as 64 lowercase hex characters."""
        return self._pubkey

    @property
    def npub(self) -> str:
        return npub_encode(self.pubkey)

    def sign(self, message32: bytes, aux_rand: bytes | None = None) -> bytes:
        """BIP-340 signature of a 32-byte message; fresh auxiliary randomness unless given."""
        aux = aux_rand if aux_rand is not None else secrets.token_bytes(32)
        return bytes(self._key.sign_schnorr(message32, aux))


def load_or_create_key(path: str | os.PathLike[str]) -> KeyPair:
    """Read ``path`` or create it (mode 0600, exclusive create): an identity is never overwritten."""
    target = Path(path)
    try:
        return KeyPair.from_hex(target.read_text(encoding="ascii"))
    except FileNotFoundError:
        pass
    except (InvalidInput, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{target} does not hold a 64-hex secp256k1 key; refusing to replace it") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    pair = KeyPair.generate()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: its key is the identity
        return load_or_create_key(target)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(pair.secret_hex + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return pair


def verify_schnorr(pubkey: bytes, message32: bytes, signature: bytes) -> bool:
    """BIP-340 verification; any malformed key or signature is simply ``False``."""
    if len(pubkey) != 32 or len(signature) != 64:
        return False
    try:
        return bool(_xonly(pubkey).verify(signature, message32))
    except (ValueError, TypeError):
        return False


@functools.lru_cache(maxsize=4096)
def _xonly(pubkey: bytes) -> PublicKeyXOnly:
    """Parsed once per key: nodes sign every result with the same one (parsing is 15 % of a verify)."""
    return PublicKeyXOnly(pubkey)


def normalize_pubkey(value: str, *, field: str = "pubkey") -> str:
    """64 lowercase hex characters for a hex or ``npub…`` key that lies on the curve."""
    text = value.strip()
    if text.startswith("npub1"):
        text = npub_decode(text, field=field)
    text = text.lower()
    if not _HEX64.match(text):
        raise InvalidInput("a public key is 64 hex characters or an npub", field=field)
    try:
        PublicKeyXOnly(bytes.fromhex(text))
    except ValueError as exc:
        raise InvalidInput("the public key is not a point on secp256k1", field=field) from exc
    return text


def poc_public_key(value: str, *, field: str = "public_key") -> str:
    """A key that only seeds the PoC (SPEC §8.3), returned as given: Gonka's forms or ours.

    Gonka sends 66-hex compressed secp256k1 keys (base64 of the 33 bytes appears too); our nodes
    use 64-hex x-only keys. The PoC's inputs are drawn from the key's *string*, so the string given is
    kept exactly (case included); only an ``npub`` becomes its hex, the form our nodes sign with.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_POC_KEY_CHARS:
        raise InvalidInput(_POC_KEY_FORMS, field=field)
    if value.startswith("npub1"):
        return normalize_pubkey(value, field=field)
    raw = _poc_key_bytes(value)
    try:
        if raw is None:
            raise ValueError("not a key form")
        if len(raw) == 32:
            PublicKeyXOnly(raw)
        else:
            PublicKey(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(_POC_KEY_FORMS, field=field) from exc
    return value


_POC_KEY_FORMS = (
    "a public key is 66 hex characters (compressed secp256k1), base64 of those 33 bytes, "
    "64 hex characters (x-only) or an npub, on secp256k1"
)


def _poc_key_bytes(value: str) -> bytes | None:
    """The key bytes of a 64/66-hex or base64-of-33-bytes string; None for anything else."""
    if len(value) in (64, 66) and _ANYHEX.match(value):
        raw = bytes.fromhex(value)
        return raw if len(raw) == 32 or raw[0] in (2, 3) else None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 33 and raw[0] in (2, 3) else None


def npub_encode(pubkey_hex: str) -> str:
    data = bech32.convertbits(bytes.fromhex(pubkey_hex), 8, 5)
    assert data is not None
    return str(bech32.bech32_encode("npub", data))


def npub_decode(npub: str, *, field: str = "pubkey") -> str:
    hrp, data = bech32.bech32_decode(npub)
    raw = bech32.convertbits(data, 5, 8, False) if data is not None else None
    if hrp != "npub" or raw is None or len(raw) != 32:
        raise InvalidInput("not a valid npub (bech32 checksum or length)", field=field)
    return bytes(raw).hex()


# ------------------------------------------------------------------------------------------- events


def _escape(text: str) -> str:
    """NIP-01 string escaping: only these seven characters are escaped, everything else is verbatim."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    out = out.replace("\t", "\\t").replace("\b", "\\b").replace("\f", "\\f")
    return f'"{out}"'


def _serialize(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError("NIP-01 serialization holds only strings, integers and lists")
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_serialize(item) for item in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__} into a NIP-01 event")


def event_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> str:
    """sha256 of ``[0,pubkey,created_at,kind,tags,content]`` serialized as NIP-01 prescribes."""
    canonical = _serialize([0, pubkey, created_at, kind, [list(t) for t in tags], content])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def canonical_json(body: Mapping[str, Any]) -> str:
    """The one JSON text a body is signed as: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_event(
    key: KeyPair,
    kind: int,
    content: str | Mapping[str, Any],
    *,
    created_at: int,
    tags: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    text = content if isinstance(content, str) else canonical_json(content)
    tag_list = [list(t) for t in tags]
    eid = event_id(key.pubkey, created_at, kind, tag_list, text)
    return {
        "id": eid,
        "pubkey": key.pubkey,
        "created_at": created_at,
        "kind": kind,
        "tags": tag_list,
        "content": text,
        "sig": key.sign(bytes.fromhex(eid)).hex(),
    }


# Unix seconds up to 2^40 (year ~36812) and NIP-01 kinds: beyond these a value cannot be a real event,
# and a created_at of 10^400 would overflow the float arithmetic of the freshness check (a 500).
_MAX_CREATED_AT = 2**40
_MAX_KIND = 65535


def _in_range(value: Any, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _check_ranges(event: Mapping[str, Any]) -> None:
    """An integer past its range is bad input (422 naming it), not a bad signature: 10^400 in
    ``created_at`` says nothing about who signed."""
    for name, maximum in (("created_at", _MAX_CREATED_AT), ("kind", _MAX_KIND)):
        value = event.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= maximum:
            raise InvalidInput(f"{name} must be between 0 and {maximum}", field=f"{SIG_FIELD}.{name}")


def _check_shape(event: Any) -> None:
    if isinstance(event, Mapping):
        _check_ranges(event)
    ok = (
        isinstance(event, Mapping)
        and isinstance(event.get("id"), str)
        and _HEX64.match(event["id"]) is not None
        and isinstance(event.get("pubkey"), str)
        and _HEX64.match(event["pubkey"]) is not None
        and isinstance(event.get("sig"), str)
        and _HEX128.match(event["sig"]) is not None
        and _in_range(event.get("created_at"), _MAX_CREATED_AT)
        and _in_range(event.get("kind"), _MAX_KIND)
        and isinstance(event.get("content"), str)
        and isinstance(event.get("tags"), list)
        and all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in event["tags"])
    )
    if not ok:
        raise SignatureRejected(
            "sig_event must be a NIP-01 event {id, pubkey, created_at, kind, tags, content, sig} "
            "with lowercase hex id, pubkey and sig",
            code="malformed_event",
        )


def verify_event(
    event: Any,
    *,
    kind: int | None = None,
    now: float | None = None,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> dict[str, Any]:
    """The event, once its shape, id, signature, kind and (when ``now`` is given) age check out."""
    _check_shape(event)
    expected = event_id(event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"])
    if expected != event["id"]:
        raise SignatureRejected("the event id is not the hash of its contents", code="bad_event_id")
    if not verify_schnorr(
        bytes.fromhex(event["pubkey"]), bytes.fromhex(expected), bytes.fromhex(event["sig"])
    ):
        raise SignatureRejected("the signature does not verify for this pubkey", code="bad_signature")
    if kind is not None and event["kind"] != kind:
        raise SignatureRejected(f"expected an event of kind {kind}, got {event['kind']}", code="wrong_kind")
    if now is not None and abs(now - event["created_at"]) > max_skew_s:
        raise SignatureRejected(
            f"created_at is more than {max_skew_s} s from the hub's clock; check the node's clock",
            code="stale_event",
        )
    return dict(event)


def sign_body(
    key: KeyPair,
    kind: int,
    body: Mapping[str, Any],
    *,
    created_at: int,
    tags: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """``body`` plus ``sig_event``: an event whose content is the body itself (SPEC §2)."""
    plain = {k: v for k, v in body.items() if k != SIG_FIELD}
    return {**plain, SIG_FIELD: sign_event(key, kind, plain, created_at=created_at, tags=tags)}


def verify_signed_body(
    body: Mapping[str, Any],
    *,
    kind: int,
    now: float,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> dict[str, Any]:
    """The verified event of a signed request whose content equals the rest of the body."""
    event = verify_event(body.get(SIG_FIELD), kind=kind, now=now, max_skew_s=max_skew_s)
    plain = {k: v for k, v in body.items() if k != SIG_FIELD}
    try:
        signed = json.loads(event["content"])
    except ValueError:
        signed = None
    if signed != plain:
        raise SignatureRejected("the signed content differs from the request body", code="content_mismatch")
    claimed = plain.get("pubkey")
    if isinstance(claimed, str) and claimed.strip():
        try:
            claimed = normalize_pubkey(claimed)
        except InvalidInput:
            claimed = None
        if claimed != event["pubkey"]:
            raise SignatureRejected("the event is signed by another key", code="pubkey_mismatch")
    return event


# ----------------------------------------------------------------------------------------- receipts


def sign_receipt(key: KeyPair, payload: Mapping[str, Any], *, created_at: int) -> dict[str, Any]:
    """A hub receipt (kind 21006) anyone holding the hub's pubkey can check offline."""
    return sign_event(key, KIND_HUB_RECEIPT, payload, created_at=created_at)


def verify_receipt(receipt: Any, hub_pubkey: str | None = None) -> dict[str, Any]:
    """The receipt's payload, after its signature and (when given) its signer are checked."""
    event = verify_event(receipt, kind=KIND_HUB_RECEIPT)
    if hub_pubkey is not None and event["pubkey"] != normalize_pubkey(hub_pubkey):
        raise SignatureRejected("the receipt was not signed by this hub", code="pubkey_mismatch")
    try:
        payload = json.loads(event["content"])
    except ValueError as exc:
        raise SignatureRejected("the receipt content is not JSON", code="malformed_event") from exc
    if not isinstance(payload, dict):
        raise SignatureRejected("the receipt content is not a JSON object", code="malformed_event")
    return payload


# ---------------------------------------------------------------------------------- owner addresses


def to_checksum_address(address: str) -> str:
    """EIP-55: each hex letter upper-cased where the keccak-256 of the lowercase address has a high nibble."""
    lower = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=lower.encode("ascii")).hexdigest()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def normalize_owner_address(address: str, *, field: str = "owner") -> str:
    """The EIP-55 form of an owner address; a mixed-case address must already carry a valid checksum."""
    text = address.strip()
    if not _ADDRESS.match(text):
        raise InvalidInput("an owner address is 0x followed by 40 hex characters", field=field)
    body = text[2:]
    checksummed = to_checksum_address(text)
    if body != body.lower() and body != body.upper() and checksummed != text:
        raise InvalidInput(
            f"bad EIP-55 checksum in {text}; did you mean {checksummed}?", field=field, code="bad_checksum"
        )
    return checksummed
