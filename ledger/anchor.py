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
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nacl.exceptions
import nacl.signing
import rfc8785

from ledger import jcs, note

VERSION = 1
CONTEXT = b"claimproof-anchor/v1\n"
SALT_BYTES = 32
FIELDS = frozenset({"commitment", "key_id", "member", "signature", "timestamp", "version"})
_TIMESTAMP = re.compile(r"[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX8 = re.compile(r"[0-9a-f]{8}")
# A Go note key name (no space, no '+'), printable, valid UTF-8 (no lone surrogates), nothing JSON
# escapes (no '"' or '\\'), bounded.
_MEMBER = re.compile(r'[^\s+"\\\x00-\x1f\x7f\ud800-\udfff]{1,120}')
# The one canonical form of a statement: what nearly every honest request is.
_CANONICAL = re.compile(
    rb'\{"commitment":"([A-Za-z0-9+/]{43}=)","key_id":"([0-9a-f]{8})","member":"([^"\\]{1,480})",'
    rb'"signature":"([A-Za-z0-9+/]{86}==)","timestamp":"([1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\dZ)",'
    rb'"version":1\}'
)
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
    # The signed bytes, when parsing already cut them out of the leaf data (a hot path).
    message: bytes = field(default=b"", compare=False, repr=False)

    # Every field is ASCII-safe or a member name with nothing JSON would escape, and members are
    # written in sorted order: plain formatting *is* RFC 8785 here (the vectors check it against
    # the rfc8785 package byte for byte), and it keeps canonicalisation off the hot path.
    def signed_message(self) -> bytes:
        return self.message or CONTEXT + self._json(signature=False)

    def canonical(self) -> bytes:
        """The leaf data: exactly the bytes that go on the ledger."""
        return self._json(signature=True)

    def _json(self, *, signature: bool) -> bytes:
        sig = f'"signature":"{_b64(self.signature)}",' if signature else ""
        return (
            f'{{"commitment":"{_b64(self.commitment)}","key_id":"{self.key_id:08x}",'
            f'"member":"{self.member}",{sig}'
            f'"timestamp":"{self.timestamp:%Y-%m-%dT%H:%M:%SZ}","version":{VERSION}}}'
        ).encode()


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
        return hashlib.sha256(salt + jcs.canonical(procedure)).digest()
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
    if m := _CANONICAL.fullmatch(data):
        commitment, signature, ts = binascii.a2b_base64(m[1]), binascii.a2b_base64(m[4]), m[5]
        try:
            statement = Statement(
                member=_member(m[3].decode("utf-8")),
                key_id=int(m[2], 16),
                commitment=commitment,
                timestamp=datetime(
                    int(ts[0:4]),
                    int(ts[5:7]),
                    int(ts[8:10]),
                    int(ts[11:13]),
                    int(ts[14:16]),
                    int(ts[17:19]),
                    tzinfo=UTC,
                ),
                signature=signature,
                # Canonical data minus its "signature" member is the canonical unsigned statement.
                message=CONTEXT + data[: m.start(4) - 13] + data[m.end(4) + 2 :],
            )
        except (UnicodeDecodeError, ValueError):
            pass  # the careful path below says precisely what is wrong
        else:
            # The regex fixed the layout; only base64 with stray padding bits is left to refuse.
            if _b64(commitment).encode() == m[1] and _b64(signature).encode() == m[4]:
                return statement
    return _statement_parse_slowly(data)


def _member(value: object) -> str:
    if not isinstance(value, str) or not _MEMBER.fullmatch(value):
        raise AnchorError(
            "member must be a member name: no spaces, '+', quotes, backslashes or control "
            "characters, at most 120 characters"
        )
    return value


def _statement_parse_slowly(data: bytes) -> Statement:
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
    member = _member(obj["member"])
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
