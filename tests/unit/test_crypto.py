"""Identity and signatures against vectors produced by other implementations, plus every refusal code."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest

from gpupool import crypto
from gpupool.errors import InvalidInput, SignatureRejected

FIXTURES = Path(__file__).parent.parent / "fixtures" / "crypto"
NOW = 1_790_000_000


def _bip340_rows() -> list[dict[str, str]]:
    # bip-0340/test-vectors.csv from github.com/bitcoin/bips (the official BIP-340 vectors).
    with open(FIXTURES / "bip340_test_vectors.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("row", _bip340_rows(), ids=lambda r: f"vector{r['index']}")
def test_bip340_official_vectors(row: dict[str, str]) -> None:
    pubkey = bytes.fromhex(row["public key"])
    message = bytes.fromhex(row["message"])
    signature = bytes.fromhex(row["signature"])
    expected = row["verification result"] == "TRUE"
    assert crypto.verify_schnorr(pubkey, message, signature) is expected
    if row["secret key"]:
        key = crypto.KeyPair.from_hex(row["secret key"])
        assert key.pubkey == row["public key"].lower()
        assert key.sign(message, bytes.fromhex(row["aux_rand"])).hex() == row["signature"].lower()


# A kind-1 note as published on the Nostr network (pubkey 35d26e46…, 2023-04-10), quoted in the test
# suite of github.com/Clay-Ferguson/quanta (UtilsTest.sig2): id and sig were made by its author's client.
NETWORK_EVENT = {
    "id": "1b71f57e1c3365f32b2a0abd8ded19f2a5e217a6eeaf3df11fa5c904bfb90dd6",
    "pubkey": "35d26e4690cbe1a898af61cc3515661eb5fa763b57bd0b42e45099c8b32fd50f",
    "created_at": 1681157953,
    "kind": 1,
    "tags": [["r", "https://btcplusplus.dev/talks#nostr"]],
    "content": "I will be giving a talk on Nostr at the Bitcoin++ conference in Austin TX, "
    "end of this month, hoping to meet some other nostr people!  https://btcplusplus.dev/talks#nostr",
    "sig": "ec6e37c3d492654a4b8b5411b1872fc1dd7bbc3920d2c0818b177b42bd9429e2"
    "06b878ad3b8fa0e72993b58182024d32a345ce487072de897bd0061d1c5e2189",
}


def test_nip01_event_from_another_implementation_verifies() -> None:
    event = crypto.verify_event(NETWORK_EVENT)
    assert event["id"] == crypto.event_id(
        NETWORK_EVENT["pubkey"], 1681157953, 1, NETWORK_EVENT["tags"], NETWORK_EVENT["content"]
    )


def test_nip01_event_tampered_content_is_refused() -> None:
    tampered = {**NETWORK_EVENT, "content": NETWORK_EVENT["content"] + "!"}
    with pytest.raises(SignatureRejected) as info:
        crypto.verify_event(tampered)
    assert info.value.code == "bad_event_id"


def test_nip01_serialization_escapes_only_the_listed_characters() -> None:
    # NIP-01: \n \" \\ \r \t \b \f are escaped; every other character (é, control 0x01) is verbatim.
    text = 'line1\nq"b\\\r\t\b\f é \x01'
    serialized = crypto._serialize([0, "ab", 1, 2, [["t", "x"]], text])
    assert serialized == '[0,"ab",1,2,[["t","x"]],"line1\\nq\\"b\\\\\\r\\t\\b\\f é \x01"]'


def test_sign_then_verify_round_trip_and_each_refusal_code() -> None:
    key = crypto.KeyPair.generate()
    other = crypto.KeyPair.generate()
    body = {"pubkey": key.pubkey, "owner": "0x" + "ab" * 20, "gpus": [{"index": 0, "vram_gb": 80.0}]}
    signed = crypto.sign_body(key, crypto.KIND_REGISTRATION, body, created_at=NOW)
    event = crypto.verify_signed_body(signed, kind=crypto.KIND_REGISTRATION, now=NOW + 5)
    assert event["pubkey"] == key.pubkey

    def code_of(candidate: dict[str, object], *, kind: int = crypto.KIND_REGISTRATION, now: int = NOW) -> str:
        with pytest.raises(SignatureRejected) as info:
            crypto.verify_signed_body(candidate, kind=kind, now=now)
        return info.value.code

    ev = signed["sig_event"]
    assert code_of({**body}) == "malformed_event"
    assert code_of({**body, "sig_event": {**ev, "sig": "zz"}}) == "malformed_event"
    assert code_of({**body, "sig_event": {**ev, "created_at": NOW + 1}}) == "bad_event_id"
    forged = {**ev, "sig": other.sign(bytes.fromhex(ev["id"])).hex()}
    assert code_of({**body, "sig_event": forged}) == "bad_signature"
    assert code_of(signed, kind=crypto.KIND_USAGE_REPORT) == "wrong_kind"
    assert code_of(signed, now=NOW + 600) == "stale_event"
    assert code_of(signed, now=NOW - 121) == "stale_event"
    assert code_of({**signed, "owner": "0x" + "cd" * 20}) == "content_mismatch"
    by_other = crypto.sign_body(other, crypto.KIND_REGISTRATION, body, created_at=NOW)
    assert code_of(by_other) == "pubkey_mismatch"


def test_npub_round_trip_and_nip19_vector() -> None:
    # NIP-19's own example pair.
    npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    hexkey = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
    assert crypto.normalize_pubkey(npub) == hexkey
    assert crypto.npub_encode(hexkey) == npub
    assert crypto.normalize_pubkey(hexkey.upper()) == hexkey
    for bad in (npub[:-1] + "x", "abc", "f" * 64, hexkey[:-2]):
        with pytest.raises(InvalidInput):
            crypto.normalize_pubkey(bad)


# The four mixed-case examples of EIP-55 itself, and its all-caps and all-lowercase examples.
EIP55_VALID = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55_VALID)
def test_eip55_vectors(address: str) -> None:
    assert crypto.normalize_owner_address(address) == address
    assert crypto.normalize_owner_address(address.lower()) == address
    assert crypto.normalize_owner_address("0x" + address[2:].upper()) == address
    last_letter = max(i for i, c in enumerate(address) if c.isalpha() and i > 1)
    flipped = address[:last_letter] + address[last_letter].swapcase() + address[last_letter + 1 :]
    with pytest.raises(InvalidInput) as info:
        crypto.normalize_owner_address(flipped)
    assert info.value.code == "bad_checksum"
    assert address in info.value.message


@pytest.mark.parametrize("bad", ["", "0x123", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x" + "g" * 40])
def test_owner_address_shape_is_checked(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        crypto.normalize_owner_address(bad)
    assert info.value.details["field"] == "owner"


def test_key_file_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node" / "key"
    first = crypto.load_or_create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert crypto.load_or_create_key(path).pubkey == first.pubkey
    assert first.secret_hex not in repr(first)
    path.write_text("not a key")
    with pytest.raises(InvalidInput):
        crypto.load_or_create_key(path)
    assert path.read_text() == "not a key"


def test_receipt_verifies_offline_and_names_its_signer() -> None:
    hub = crypto.KeyPair.generate()
    receipt = crypto.sign_receipt(hub, {"payout_id": 7, "amount": 1_500_000}, created_at=NOW)
    assert crypto.verify_receipt(receipt, hub.pubkey) == {"payout_id": 7, "amount": 1_500_000}
    with pytest.raises(SignatureRejected) as info:
        crypto.verify_receipt(receipt, crypto.KeyPair.generate().pubkey)
    assert info.value.code == "pubkey_mismatch"
    forged = {**receipt, "content": '{"payout_id":7,"amount":9000000}'}
    with pytest.raises(SignatureRejected):
        crypto.verify_receipt(forged, hub.pubkey)
