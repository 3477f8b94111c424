"""C2SP tlog-checkpoint bodies (pure: no Django).

A checkpoint body is the text of a signed note::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <base64 root hash (32 bytes)>\\n
    [<extension line>\\n ...]

``CheckpointError`` subclasses ``ledger.note.NoteError`` (itself a ``ValueError``), so callers that
open a note and parse its body handle one exception type.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ledger.note import NoteError, check_text

__all__ = ["MAX_TREE_SIZE", "Checkpoint", "CheckpointError"]

MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 (RFC 9162)
HASH_SIZE = 32

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_ROOT = re.compile(r"[A-Za-z0-9+/]{43}=")
_CONTROL = re.compile("[\x00-\x1f]")


class CheckpointError(NoteError):
    """A checkpoint body or field is malformed."""


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or _CONTROL.search(value):
        raise CheckpointError(f"{what} must be a non-empty line without control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"{what} is not valid UTF-8") from exc
    return value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError("size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("size out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("root hash must be 32 bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("extensions must be a tuple of lines")
        for line in self.extensions:
            _check_line(line, "extension line")

    @classmethod
    def parse(cls, body: str | bytes) -> Checkpoint:
        """Parse a checkpoint body (note text, ending in a newline); strict and canonical."""
        try:
            text = check_text(body)
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, size and root hash lines")
        origin, size, root, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise CheckpointError("malformed tree size")
        if not _ROOT.fullmatch(root):
            raise CheckpointError("malformed root hash")
        root_hash = base64.b64decode(root)
        if base64.b64encode(root_hash).decode("ascii") != root:
            raise CheckpointError("non-canonical root hash encoding")
        return cls(origin, int(size), root_hash, tuple(extensions))

    def body(self) -> str:
        """The checkpoint as note text (what the log signs and witnesses cosign)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii")]
        return "\n".join([*lines, *self.extensions]) + "\n"
