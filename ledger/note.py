"""Signed notes (C2SP signed-note, Go's golang.org/x/mod/sumdb/note) and cosignatures.

Pure module: stdlib and PyNaCl only, no Django. See docs/signed-notes.md.

Key strings are Go's:

* verifier key ``<name>+<key id %08x>+<base64(alg || public key)>``
* signer key ``PRIVATE+KEY+<name>+<key id %08x>+<base64(alg || Ed25519 seed)>``

with ``key id = SHA-256(name || "\\n" || alg || public key)[:4]`` (big endian). ``alg`` 0x01 is a
plain Ed25519 note signature (``sign`` / ``verify``); 0x04 is a C2SP ``cosignature/v1``
timestamped Ed25519 cosignature (``cosign`` / ``verify_cosignature``). A 0x04 signer key is the
same string with 0x04 as its algorithm byte, as transparency-dev/formats writes it.

A signed note is ``text || "\\n" || signature lines``; each line is ``"— <name> <base64(key id ||
signature)>\\n"`` (U+2014 em dash). Parsing follows Go's ``note.Open``: valid UTF-8, no ASCII
control character but newline, the text split from the signatures at the last blank line, at most
100 signature lines, a signature from an unknown (name, key id) ignored, a signature from a known
key that does not verify rejects the whole note, and a note with no verified signature is
rejected. Every failure on untrusted input is a ``NoteError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import nacl.exceptions
import nacl.signing

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Note",
    "NoteError",
    "Signature",
    "add_signatures",
    "check_text",
    "cosign",
    "ed25519_verifier_key",
    "generate_cosigner_key",
    "generate_key",
    "key_id",
    "parse_signer_key",
    "parse_verifier_key",
    "sign",
    "split_note",
    "verifier_key",
    "verify",
    "verify_cosignature",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100  # Go's note.Open limit; C2SP requires accepting at least 16
MAX_NOTE_BYTES = 1 << 20  # whole signed note, UTF-8 encoded
MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: a timestamp MUST NOT exceed 2^63 - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_COSIG_HEADER = "cosignature/v1\ntime {}\n"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property.
_SPACE_OR_PLUS = re.compile(
    "[+\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
# Padded standard base64, as Go's base64.StdEncoding decodes it (non-zero trailing bits allowed).
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify."""


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key id and the base64 payload (key id || signature)."""

    name: str
    key_id: int
    base64: str

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A verified note: its text (body) and its verified and unverified signatures."""

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the keys whose signatures verified, in note order."""
        return tuple(s.name for s in self.signatures)


_Check = Callable[["_Key", bytes, bytes], "int | None"]  # -> timestamp (0 for notes) or None


@dataclass(frozen=True, slots=True)
class _Key:
    """A parsed verifier key (the result of :func:`parse_verifier_key`)."""

    name: str
    key_id: int
    alg: int
    public: bytes
    verify_key: nacl.signing.VerifyKey


# --- keys --------------------------------------------------------------------------------------


def _valid_name(name: str) -> bool:
    """Go's rule (non-empty, no Unicode space, no '+'), plus no control character."""
    return bool(name) and not _SPACE_OR_PLUS.search(name) and not _CONTROL.search(name)


def _b64decode(text: str) -> bytes:
    if not _B64.fullmatch(text):
        raise NoteError("malformed base64")
    return binascii.a2b_base64(text.encode("ascii"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """``SHA-256(name || "\\n" || alg || public key)[:4]`` as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _valid_name(name):
        raise NoteError(f"invalid key name {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("key name is not valid UTF-8") from exc
    return name


def ed25519_verifier_key(name: str, public_key: bytes, alg: int = ALG_ED25519) -> str:
    """Verifier key string for a raw 32-byte Ed25519 public key (alg 0x01 or 0x04)."""
    _check_name(name)
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1) or len(public_key) != 32:
        raise NoteError("need a 32-byte Ed25519 key and alg 0x01 or 0x04")
    kid = key_id(name, alg, public_key)
    return f"{name}+{kid:08x}+{_b64(bytes([alg]) + public_key)}"


def _generate(name: str, alg: int) -> tuple[str, str]:
    _check_name(name)
    sk = nacl.signing.SigningKey.generate()
    public = bytes(sk.verify_key)
    kid = key_id(name, alg, public)
    signer = f"PRIVATE+KEY+{name}+{kid:08x}+{_b64(bytes([alg]) + bytes(sk))}"
    return signer, f"{name}+{kid:08x}+{_b64(bytes([alg]) + public)}"


def generate_key(name: str) -> tuple[str, str]:
    """New Ed25519 (alg 0x01) note key: ``(signer_key, verifier_key)``."""
    return _generate(name, ALG_ED25519)


def generate_cosigner_key(name: str) -> tuple[str, str]:
    """New cosignature/v1 (alg 0x04) key: ``(signer_key, verifier_key)``."""
    return _generate(name, ALG_COSIGNATURE_V1)


@lru_cache(maxsize=1024)
def parse_verifier_key(vkey: str) -> _Key:
    """Parse a verifier key string (alg 0x01 or 0x04); raises NoteError."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteError("malformed verifier key")
    name, hex_id, key64 = parts
    if not _valid_name(name) or not _HEX8.fullmatch(hex_id):
        raise NoteError("malformed verifier key")
    raw = _b64decode(key64)
    if not raw:
        raise NoteError("malformed verifier key")
    kid = int(hex_id, 16)
    if kid != key_id(name, raw[0], raw[1:]):
        raise NoteError("verifier key id does not match its key")
    alg, public = raw[0], raw[1:]
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(f"unknown verifier key algorithm {alg:#04x}")
    if len(public) != 32:
        raise NoteError("malformed Ed25519 verifier key")
    return _Key(name, kid, alg, public, nacl.signing.VerifyKey(public))


@lru_cache(maxsize=256)
def parse_signer_key(skey: str) -> tuple[_Key, nacl.signing.SigningKey]:
    """Parse a signer key string: its public half and the PyNaCl signing key."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise NoteError("malformed signer key")
    name, hex_id, key64 = parts[2:]
    if not _valid_name(name) or not _HEX8.fullmatch(hex_id):
        raise NoteError("malformed signer key")
    raw = _b64decode(key64)
    if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError("malformed or unsupported signer key")
    sk = nacl.signing.SigningKey(raw[1:])
    public = bytes(sk.verify_key)
    kid = int(hex_id, 16)
    if kid != key_id(name, raw[0], public):
        raise NoteError("signer key id does not match its key")
    return _Key(name, kid, raw[0], public, sk.verify_key), sk


def _as_str(key: object) -> str:
    if not isinstance(key, str):
        raise NoteError("a key must be a str")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("a key must be valid UTF-8") from exc
    return key


def verifier_key(signer_key: str) -> str:
    """The verifier key matching a signer key (alg 0x01 or 0x04)."""
    key, _ = parse_signer_key(_as_str(signer_key))
    return f"{key.name}+{key.key_id:08x}+{_b64(bytes([key.alg]) + key.public)}"


@lru_cache(maxsize=256)
def _key_map(vkeys: tuple[str, ...], alg: int) -> dict[tuple[str, int], _Key | None]:
    """(name, key id) -> key; None marks two different keys with the same name and id."""
    out: dict[tuple[str, int], _Key | None] = {}
    for vkey in vkeys:
        key = parse_verifier_key(vkey)
        if key.alg != alg:
            raise NoteError(f"key {key.name} has algorithm {key.alg:#04x}, need {alg:#04x}")
        slot = (key.name, key.key_id)
        if slot not in out:
            out[slot] = key
        elif (prev := out[slot]) is not None and prev.public != key.public:
            out[slot] = None
    return out


def _keys(keys: object, alg: int) -> dict[tuple[str, int], _Key | None]:
    if isinstance(keys, str):
        keys = (keys,)
    try:
        as_tuple = tuple(keys)  # type: ignore[arg-type]
    except TypeError as exc:
        raise NoteError("keys must be an iterable of key strings") from exc
    for k in as_tuple:
        _as_str(k)
    return _key_map(as_tuple, alg)


# --- parsing -----------------------------------------------------------------------------------


def _text(data: object) -> tuple[str, bytes]:
    """Validate a note (or body) as Go does: UTF-8, no control character but newline."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    else:
        raise NoteError("a note must be str or bytes")
    if len(raw) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    if _CONTROL.search(text):
        raise NoteError("note contains a control character")
    return text, raw


def _parse_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("malformed signature line")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not _valid_name(name) or not b64:
        raise NoteError("malformed signature line")
    raw = _b64decode(b64)
    if len(raw) < 5:
        raise NoteError("signature too short")
    return Signature(name, int.from_bytes(raw[:4], "big"), b64)


def _parse(note_text: object) -> tuple[str, list[Signature]]:
    text, _ = _text(note_text)
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no signature block")
    body, block = text[: split + 1], text[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("note has no signatures or lacks a final newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return body, [_parse_line(line) for line in lines]


def split_note(note_text: str | bytes) -> tuple[str, tuple[str, ...]]:
    """Split a well-formed signed note into its body and its signature lines (with newlines)."""
    body, sigs = _parse(note_text)
    return body, tuple(s.line() for s in sigs)


def _check_body(body: object) -> tuple[str, bytes]:
    text, raw = _text(body)
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    return text, raw


def check_text(body: str | bytes) -> str:
    """Validate note text (UTF-8, no control character but newline, final newline); return it."""
    return _check_body(body)[0]


def add_signatures(note_text: str | bytes, lines: Iterable[str]) -> str:
    """Append signature lines to a signed note.

    A new line replaces an existing one with the same name and key id, and exact duplicates are
    dropped, so adding cosignatures is idempotent.
    """
    body, existing = _parse(note_text)
    if isinstance(lines, str):
        lines = (lines,)
    new: list[Signature] = []
    for line in lines:
        if not isinstance(line, str):
            raise NoteError("signature lines must be str")
        line = line.removesuffix("\n")
        if "\n" in line or _CONTROL.search(line):
            raise NoteError("malformed signature line")
        new.append(_parse_line(line))
    replaced = {(s.name, s.key_id) for s in new}
    merged = [s for s in existing if (s.name, s.key_id) not in replaced]
    for s in new:
        if s not in merged:
            merged.append(s)
    if len(merged) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    out = body + "\n" + "".join(s.line() for s in merged)
    if len(out.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    return out


# --- signing and verifying ---------------------------------------------------------------------


def _signature_line(key: _Key, payload: bytes) -> str:
    return f"{_SIG_PREFIX}{key.name} {_b64(key.key_id.to_bytes(4, 'big') + payload)}\n"


def sign(body: str | bytes, signer_key: str) -> str:
    """Sign ``body`` (note text ending in a newline) with an Ed25519 (0x01) signer key."""
    text, raw = _check_body(body)
    key, sk = parse_signer_key(_as_str(signer_key))
    if key.alg != ALG_ED25519:
        raise NoteError("sign() needs an Ed25519 (0x01) signer key; use cosign()")
    out = text + "\n" + _signature_line(key, sk.sign(raw).signature)
    if len(out.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    return out


def _ed25519_ok(key: _Key, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        key.verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


def _open(
    note_text: object, keys: dict[tuple[str, int], _Key | None], check: _Check
) -> tuple[str, list[tuple[Signature, int]], list[Signature]]:
    body, sigs = _parse(note_text)
    raw_body = body.encode("utf-8")
    verified: list[tuple[Signature, int]] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for sig in sigs:
        slot = (sig.name, sig.key_id)
        if slot not in keys:
            if sig not in unverified:
                unverified.append(sig)
            continue
        key = keys[slot]
        if key is None:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        if slot in seen:
            continue
        seen.add(slot)
        result = check(key, raw_body, _b64decode(sig.base64)[4:])
        if result is None:
            raise NoteError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified.append((sig, result))
    if not verified:
        raise NoteError("note has no verifiable signatures")
    return body, verified, unverified


def _check_note_sig(key: _Key, body: bytes, sig: bytes) -> int | None:
    return 0 if _ed25519_ok(key, body, sig) else None


def _cosigned_message(body: bytes, timestamp: int) -> bytes:
    return _COSIG_HEADER.format(timestamp).encode("ascii") + body


def _check_cosig(key: _Key, body: bytes, sig: bytes) -> int | None:
    if len(sig) != 8 + 64 or body.count(b"\n") < 3:
        return None
    (timestamp,) = struct.unpack(">Q", sig[:8])
    if timestamp > MAX_TIMESTAMP:
        return None
    return timestamp if _ed25519_ok(key, _cosigned_message(body, timestamp), sig[8:]) else None


def verify(note_text: str | bytes, verifier_keys: Iterable[str]) -> Note:
    """Open a signed note with Ed25519 (0x01) verifier keys, as Go's ``note.Open`` does.

    Raises ``NoteError`` if the note is malformed, a known key's signature is invalid, or no
    known key signed it.
    """
    keys = _keys(verifier_keys, ALG_ED25519)
    body, verified, unverified = _open(note_text, keys, _check_note_sig)
    return Note(body, tuple(s for s, _ in verified), tuple(unverified))


def cosign(checkpoint_body: str | bytes, signer_key: str, timestamp: int) -> str:
    """C2SP cosignature/v1 signature line (with newline) over a checkpoint body at ``timestamp``.

    ``signer_key`` is a 0x04 signer key (``generate_cosigner_key``); the line carries
    ``key id || uint64 BE timestamp || Ed25519("cosignature/v1\\ntime <ts>\\n" || body)``.
    """
    _, raw = _check_body(checkpoint_body)
    if raw.count(b"\n") < 3:
        raise NoteError("a checkpoint body has at least three lines")
    key, sk = parse_signer_key(_as_str(signer_key))
    if key.alg != ALG_COSIGNATURE_V1:
        raise NoteError("cosign() needs a cosignature/v1 (0x04) signer key")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise NoteError("timestamp must be an int")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError("timestamp out of range")
    signature = sk.sign(_cosigned_message(raw, timestamp)).signature
    return _signature_line(key, struct.pack(">Q", timestamp) + signature)


def verify_cosignature(note_text: str | bytes, cosigner_keys: Iterable[str]) -> dict[str, int]:
    """``{cosigner name: timestamp}`` for the cosignature/v1 (0x04) keys whose lines verified.

    Same rules as ``verify``: lines from unknown keys are ignored, an invalid line from a known
    key rejects the note, and ``NoteError`` is raised when no known cosigner verified.
    """
    keys = _keys(cosigner_keys, ALG_COSIGNATURE_V1)
    _, verified, _ = _open(note_text, keys, _check_cosig)
    out: dict[str, int] = {}
    for sig, timestamp in verified:
        out.setdefault(sig.name, timestamp)
    return out


VerifierKey = _Key
