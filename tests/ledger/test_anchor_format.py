"""The leaf format (docs/ledger-format.md) against its published vectors (vectors/anchor_v1.json).

ledger/anchor.py must reproduce every positive vector byte for byte and refuse every negative one
with AnchorError; a second Ed25519 implementation (``cryptography``) and a hand-written
commitment check make sure the vectors say what the format document says, not merely what our
code happens to do.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger import anchor, merkle, note
from ledger.anchor import AnchorError

V = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "anchor_v1.json").read_text("utf-8")
)
POSITIVE = {v["name"]: v for v in V["positive"]}
NEGATIVE = {v["name"]: v for v in V["negative"]}
PARSE_NEGATIVE = [n for n, v in NEGATIVE.items() if v["stage"] == "parse"]
VERIFY_NEGATIVE = [n for n, v in NEGATIVE.items() if v["stage"] == "verify"]


def _when(vector: dict) -> datetime:
    return datetime.strptime(vector["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _seed() -> bytes:
    """The Ed25519 seed of the published test key, read without ledger.note."""
    private, key, name, key_id, key64 = V["signer_key"].split("+", 4)
    assert (private, key, name, key_id) == ("PRIVATE", "KEY", V["member"], V["key_id"])
    raw = base64.b64decode(key64, validate=True)
    assert raw[0] == 0x01  # Ed25519 note key
    return raw[1:]


def test_the_vector_key_is_labelled_as_a_published_test_key() -> None:
    assert "PUBLISHED TEST KEY" in V["test_key_warning"]
    assert V["member"].endswith(".claimproof.example")


def test_the_vector_key_strings_are_go_note_keys_with_the_right_key_id() -> None:
    public = bytes.fromhex(V["public_key_hex"])
    expected_id = hashlib.sha256(V["member"].encode() + b"\n\x01" + public).digest()[:4]
    assert V["key_id"] == expected_id.hex()
    assert V["verifier_key"] == note.verifier_key(V["signer_key"])
    assert V["verifier_key"] == f"{V['member']}+{V['key_id']}+" + base64.b64encode(
        b"\x01" + public
    ).decode("ascii")


def test_the_vector_private_key_derives_its_public_key_in_cryptography() -> None:
    public = Ed25519PrivateKey.from_private_bytes(_seed()).public_key().public_bytes_raw()
    assert public.hex() == V["public_key_hex"]


def test_the_context_prefix_is_the_documented_one() -> None:
    assert bytes.fromhex(V["context_hex"]) == anchor.CONTEXT == b"claimproof-anchor/v1\n"


# --- positive vectors: byte for byte ---------------------------------------------------------


@pytest.mark.parametrize("name", POSITIVE)
def test_it_reproduces_the_procedure_jcs_bytes(name: str) -> None:
    v = POSITIVE[name]
    jcs = rfc8785.dumps(v["procedure"])
    assert jcs == bytes.fromhex(v["procedure_jcs_hex"]) == v["procedure_jcs"].encode("utf-8")
    if "procedure_as_written" in v:
        assert json.loads(v["procedure_as_written"]) == v["procedure"]


@pytest.mark.parametrize("name", POSITIVE)
def test_the_commitment_is_sha256_of_salt_and_jcs_procedure(name: str) -> None:
    v = POSITIVE[name]
    salt = bytes.fromhex(v["salt_hex"])
    assert len(salt) == 32
    expected = hashlib.sha256(salt + rfc8785.dumps(v["procedure"])).digest()
    assert expected.hex() == v["commitment_hex"]
    assert base64.b64encode(expected).decode("ascii") == v["commitment_base64"]
    assert anchor.commitment(salt, v["procedure"]) == expected


@pytest.mark.parametrize("name", POSITIVE)
def test_it_signs_the_vector_statement_byte_for_byte(name: str) -> None:
    v = POSITIVE[name]
    statement = anchor.statement_sign(
        commitment=bytes.fromhex(v["commitment_hex"]),
        signer_key=V["signer_key"],
        timestamp=_when(v),
    )
    assert statement == bytes.fromhex(v["statement_hex"]) == v["statement"].encode("utf-8")


@pytest.mark.parametrize("name", POSITIVE)
def test_it_parses_the_vector_statement_into_its_fields(name: str) -> None:
    v = POSITIVE[name]
    statement = anchor.statement_parse(bytes.fromhex(v["statement_hex"]))
    assert statement.member == V["member"]
    assert f"{statement.key_id:08x}" == V["key_id"]
    assert statement.commitment.hex() == v["commitment_hex"]
    assert statement.timestamp == _when(v)
    assert statement.signature.hex() == v["signature_hex"]
    assert statement.signed_message() == bytes.fromhex(v["signed_message_hex"])
    assert statement.canonical() == bytes.fromhex(v["statement_hex"])


@pytest.mark.parametrize("name", POSITIVE)
def test_it_verifies_the_vector_statement(name: str) -> None:
    v = POSITIVE[name]
    anchor.statement_verify(anchor.statement_parse(v["statement"].encode()), V["verifier_key"])


@pytest.mark.parametrize("name", POSITIVE)
def test_the_leaf_hash_is_rfc9162_of_the_statement_bytes(name: str) -> None:
    v = POSITIVE[name]
    data = bytes.fromhex(v["statement_hex"])
    assert hashlib.sha256(b"\x00" + data).hexdigest() == v["leaf_hash_hex"]
    assert merkle.leaf_hash(data).hex() == v["leaf_hash_hex"]


# --- the vectors checked without ledger.anchor -----------------------------------------------


@pytest.mark.parametrize("name", POSITIVE)
def test_the_signed_message_is_context_then_jcs_of_the_unsigned_fields(name: str) -> None:
    v = POSITIVE[name]
    unsigned = {
        "commitment": v["commitment_base64"],
        "key_id": V["key_id"],
        "member": V["member"],
        "timestamp": v["timestamp"],
        "version": 1,
    }
    expected = b"claimproof-anchor/v1\n" + rfc8785.dumps(unsigned)
    assert expected == bytes.fromhex(v["signed_message_hex"]) == v["signed_message"].encode()
    # The fields are ASCII strings and a small integer, so JCS is also sorted compact json.
    compact = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    assert rfc8785.dumps(unsigned) == compact


@pytest.mark.parametrize("name", POSITIVE)
def test_the_statement_is_jcs_of_the_signed_fields_plus_the_signature(name: str) -> None:
    v = POSITIVE[name]
    full = {
        "commitment": v["commitment_base64"],
        "key_id": V["key_id"],
        "member": V["member"],
        "signature": v["signature_base64"],
        "timestamp": v["timestamp"],
        "version": 1,
    }
    assert rfc8785.dumps(full) == v["statement"].encode("utf-8")


@pytest.mark.parametrize("name", POSITIVE)
def test_the_vector_signature_verifies_with_cryptography(name: str) -> None:
    v = POSITIVE[name]
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(V["public_key_hex"]))
    public.verify(bytes.fromhex(v["signature_hex"]), bytes.fromhex(v["signed_message_hex"]))


@pytest.mark.parametrize("name", POSITIVE)
def test_cryptography_signs_the_same_signature_ed25519_is_deterministic(name: str) -> None:
    v = POSITIVE[name]
    signature = Ed25519PrivateKey.from_private_bytes(_seed()).sign(
        bytes.fromhex(v["signed_message_hex"])
    )
    assert signature.hex() == v["signature_hex"]


@pytest.mark.parametrize("name", POSITIVE)
def test_cryptography_refuses_the_signature_over_another_message(name: str) -> None:
    v = POSITIVE[name]
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(V["public_key_hex"]))
    message = bytes.fromhex(v["signed_message_hex"])
    with pytest.raises(InvalidSignature):
        public.verify(bytes.fromhex(v["signature_hex"]), message.replace(b"v1\n", b"v2\n", 1))


@pytest.mark.parametrize("name", POSITIVE)
def test_the_statement_holds_no_procedure_content(name: str) -> None:
    v = POSITIVE[name]
    statement = json.loads(v["statement"])
    assert set(statement) == set(anchor.FIELDS)
    for value in v["procedure"].values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in v["statement"]


# --- negative vectors ------------------------------------------------------------------------


def _data(vector: dict) -> bytes:
    data = bytes.fromhex(vector["statement_hex"])
    if "statement" in vector:
        assert vector["statement"].encode("utf-8") == data
    return data


@pytest.mark.parametrize("name", PARSE_NEGATIVE)
def test_it_refuses_to_parse_the_negative_vector(name: str) -> None:
    v = NEGATIVE[name]
    with pytest.raises(AnchorError, match=v["error"]):
        anchor.statement_parse(_data(v))


@pytest.mark.parametrize("name", VERIFY_NEGATIVE)
def test_it_parses_but_refuses_to_verify_the_negative_vector(name: str) -> None:
    v = NEGATIVE[name]
    statement = anchor.statement_parse(_data(v))
    with pytest.raises(AnchorError, match=v["error"]):
        anchor.statement_verify(statement, V["verifier_key"])


@pytest.mark.parametrize("name", VERIFY_NEGATIVE)
def test_cryptography_agrees_the_negative_vector_signature_is_bad(name: str) -> None:
    v = NEGATIVE[name]
    statement = json.loads(_data(v))
    signature = base64.b64decode(statement.pop("signature"))
    message = b"claimproof-anchor/v1\n" + rfc8785.dumps(statement)
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(V["public_key_hex"]))
    with pytest.raises(InvalidSignature):
        public.verify(signature, message)


def test_it_refuses_a_statement_signed_by_another_key_with_the_same_name() -> None:
    impostor, _ = note.generate_key(V["member"])
    v = POSITIVE["hl7-ambulation"]
    data = anchor.statement_sign(
        commitment=bytes.fromhex(v["commitment_hex"]), signer_key=impostor, timestamp=_when(v)
    )
    with pytest.raises(AnchorError, match="names another key"):
        anchor.statement_verify(anchor.statement_parse(data), V["verifier_key"])


def test_it_refuses_deeply_nested_json_as_an_anchor_error() -> None:
    with pytest.raises(AnchorError, match="not valid UTF-8 JSON"):
        anchor.statement_parse(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("data", [b"", b"null", b"1", b'"x"', b"{}", "{}".encode("utf-16")])
def test_it_refuses_what_is_not_a_statement_object(data: bytes) -> None:
    with pytest.raises(AnchorError):
        anchor.statement_parse(data)


def test_the_format_accepts_a_future_timestamp_the_node_refuses_it() -> None:
    (v,) = V["valid_format_refused_by_node"]
    statement = anchor.statement_parse(v["statement"].encode())
    anchor.statement_verify(statement, V["verifier_key"])
    assert statement.timestamp.year == 2999
    assert "bad_timestamp" in v["why"]


def test_it_refuses_a_salt_that_is_not_32_bytes() -> None:
    with pytest.raises(AnchorError, match="32 bytes"):
        anchor.commitment(bytes(16), POSITIVE["hl7-ambulation"]["procedure"])


def test_a_new_salt_is_32_random_bytes() -> None:
    salts = {anchor.new_salt() for _ in range(8)}
    assert len(salts) == 8
    assert all(len(s) == 32 for s in salts)
