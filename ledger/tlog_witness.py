"""The C2SP tlog-witness ``add-checkpoint`` wire format (pure: no Django).

Request body (https://c2sp.org/tlog-witness)::

    old <size>\\n                 decimal, no leading zero (except "0")
    <base64 hash>\\n ...          0 to 63 consistency proof lines
    \\n                           an empty line
    <checkpoint note>            the log-signed checkpoint, signature lines and all

Answers: 200 with one or more cosignature lines; 409 with the witness's size and a newline as
``text/x.tlog.size``; 400, 403, 404 and 422 for the other refusals.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

MAX_PROOF_LINES = 63
MAX_SIZE = 2**63 - 1
SIZE_CONTENT_TYPE = "text/x.tlog.size"
COSIGNATURE_CONTENT_TYPE = "text/plain; charset=utf-8"

_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")
_SIZE_BODY = re.compile(rb"(0|[1-9][0-9]{0,18})\n")
# A 32-byte hash in canonical standard base64: 42 characters, a 43rd whose two low bits are
# zero (it carries the last 4 bits), and one '='. Checked by pattern rather than by decoding
# and encoding again: a request carries up to 63 of them.
_HASH_B64 = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")


class WireError(ValueError):
    """A request or an answer that does not follow the wire format."""


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note_text: str


def _hash(line: str) -> bytes:
    if _HASH_B64.fullmatch(line) is not None:
        return binascii.a2b_base64(line)
    try:
        base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"a proof line is not base64: {line[:60]!r}") from exc
    raise WireError(f"a proof line is not the base64 of a 32-byte hash: {line[:60]!r}")


def parse_request(body: bytes) -> AddCheckpoint:
    """Split an add-checkpoint body into old size, proof and checkpoint note."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("the body is not UTF-8") from exc
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise WireError("no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise WireError("the first line is not 'old <size>'")
    old_size = int(match.group(1))
    if old_size > MAX_SIZE:
        raise WireError("the old size is too large")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WireError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = [_hash(line) for line in lines[1:]]
    if not note_text:
        raise WireError("no checkpoint after the empty line")
    return AddCheckpoint(old_size, proof, note_text)


def format_request(old_size: int, proof: list[bytes], note_text: str) -> bytes:
    """The add-checkpoint body for a checkpoint note and a consistency proof from old_size."""
    if not 0 <= old_size <= MAX_SIZE:
        raise WireError(f"bad old size {old_size}")
    if len(proof) > MAX_PROOF_LINES:
        raise WireError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    lines = [f"old {old_size}\n"]
    lines += [base64.b64encode(h).decode("ascii") + "\n" for h in proof]
    return ("".join(lines) + "\n" + note_text).encode("utf-8")


def format_size(size: int) -> bytes:
    """A 409 answer's body: the size the witness last cosigned."""
    return f"{size}\n".encode("ascii")


def parse_size(body: bytes) -> int:
    """The size in a 409 answer's body."""
    match = _SIZE_BODY.fullmatch(body)
    if match is None or int(match.group(1)) > MAX_SIZE:
        raise WireError(f"a 409 answer's body is not '<size>\\n': {body[:40]!r}")
    return int(match.group(1))


def parse_cosignatures(body: bytes) -> list[str]:
    """The signature lines of a 200 answer (each '— <name> <base64>\\n')."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("the answer is not UTF-8") from exc
    if not text.endswith("\n"):
        raise WireError("the answer does not end in a newline")
    lines = [line + "\n" for line in text[:-1].split("\n")]
    if not lines or any(not line.startswith("\u2014 ") for line in lines):
        raise WireError("the answer is not a sequence of note signature lines")
    return lines
