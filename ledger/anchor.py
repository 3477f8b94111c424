"""Procedure anchors: the leaf format of the ledger (pure: no Django). See docs/ledger-format.md.

A leaf's data is the RFC 8785 canonical JSON of::

    {"commitment": base64(SHA-256(salt || JCS(Procedure))), "key_id": "<8 hex>",
     "member": "<member name>", "signature": base64(Ed25519 signature),
     "timestamp": "YYYY-MM-DDTHH:MM:SSZ", "version": 1}

The signature covers ``b"claimproof-anchor/v1\\n" + JCS(statement without "signature")`` under the
member's anchor key (a Go note key, alg 0x01, whose key id is ``key_id``). No patient data: only
the salted commitment, the member and the time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import nacl.exceptions
import nacl.signing
import rfc8785

from ledger import note

VERSION = 1
CONTEXT = b"claimproof-anchor/v1\n"
SALT_BYTES = 32
FIELDS = frozenset({"commitment", "key_id", "member", "signature", "timestamp", "version"})
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX8 = re.compile(r"[0-9a-f]{8}")
# A Go note key name (no space, no '+'), printable, valid UTF-8 (no lone surrogates), bounded.
_MEMBER = re.compile(r"[^\s+\x00-\x1f\x7f\ud800-\udfff]{1,120}")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class AnchorError(ValueError):
    """The anchor statement is malformed, not canonical, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Statement:
    member: str
    key_id: int
    commitment: bytes
    timestamp: datetime
    signature: bytes

    def signed_message(self) -> bytes:
        return CONTEXT + rfc8785.dumps(self._fields())

    def canonical(self) -> bytes:
        """The leaf data: exactly the bytes that go on the ledger."""
        return rfc8785.dumps({**self._fields(), "signature": _b64(self.signature)})

    def _fields(self) -> dict:
        return {
            "commitment": _b64(self.commitment),
            "key_id": f"{self.key_id:08x}",
            "member": self.member,
            "timestamp": self.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "version": VERSION,
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str) or not _B64.fullmatch(value):
        raise AnchorError(f"{what} must be standard base64")
    raw = binascii.a2b_base64(value)
    if len(raw) != size:
        raise AnchorError(f"{what} must be {size} bytes")
    return raw


def commitment(salt: bytes, procedure: dict) -> bytes:
    """``SHA-256(salt || JCS(procedure))``: what the ledger holds for a disclosed Procedure."""
    if len(salt) != SALT_BYTES:
        raise AnchorError(f"the salt must be {SALT_BYTES} bytes")
    try:
        return hashlib.sha256(salt + rfc8785.dumps(procedure)).digest()
    except rfc8785.CanonicalizationError as exc:
        raise AnchorError(f"the procedure cannot be canonicalised: {exc}") from exc


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def statement_sign(
    *, commitment: bytes, signer_key: str, timestamp: datetime | None = None
) -> bytes:
    """Build and sign an anchor statement with a member's Go-format signer key."""
    key, signing_key = note.parse_signer_key(signer_key)
    if key.alg != note.ALG_ED25519:
        raise AnchorError("anchors are signed with an Ed25519 (alg 0x01) note key")
    when = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    unsigned = Statement(key.name, key.key_id, commitment, when, b"")
    signature = signing_key.sign(unsigned.signed_message()).signature
    return Statement(key.name, key.key_id, commitment, when, signature).canonical()


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise AnchorError("duplicate member in the JSON object")
    return out


def statement_parse(data: bytes) -> Statement:
    """Parse leaf data, insisting on the exact canonical form: one statement, one byte string."""
    try:
        obj = json.loads(data, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AnchorError(f"not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise AnchorError("an anchor statement is a JSON object")
    if set(obj) != FIELDS:
        missing, extra = sorted(FIELDS - set(obj)), sorted(set(obj) - FIELDS)
        raise AnchorError(f"wrong fields (missing: {missing}, unexpected: {extra})")
    if obj["version"] != VERSION or isinstance(obj["version"], bool):
        raise AnchorError(f"unsupported version {obj['version']!r}; this ledger takes {VERSION}")
    member = obj["member"]
    if not isinstance(member, str) or not _MEMBER.fullmatch(member):
        raise AnchorError("member must be a member name: no spaces, '+' or control characters")
    if not isinstance(obj["key_id"], str) or not _HEX8.fullmatch(obj["key_id"]):
        raise AnchorError("key_id must be 8 lowercase hex digits")
    ts = obj["timestamp"]
    if not isinstance(ts, str) or not _TIMESTAMP.fullmatch(ts):
        raise AnchorError("timestamp must be RFC 3339 UTC to the second: YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise AnchorError(f"timestamp is not a real time: {ts}") from exc
    statement = Statement(
        member=member,
        key_id=int(obj["key_id"], 16),
        commitment=_b64decode(obj["commitment"], 32, "commitment"),
        timestamp=when,
        signature=_b64decode(obj["signature"], 64, "signature"),
    )
    if statement.canonical() != data:
        raise AnchorError("the statement is not in RFC 8785 canonical form")
    return statement


def statement_verify(statement: Statement, verifier_key: str) -> None:
    """Check the statement's signature under the member's anchor verifier key."""
    key = note.parse_verifier_key(verifier_key)
    if key.name != statement.member or key.key_id != statement.key_id:
        raise AnchorError("the statement names another key than this one")
    try:
        key.verify_key.verify(statement.signed_message(), statement.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise AnchorError("the signature does not verify under the member's key") from exc
