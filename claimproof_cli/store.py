"""The provider's local store: one SQLite file it owns (mode 0600), never sent anywhere.

It holds what only the provider has and must not lose: its private signing keys (JWK), the path
of its member anchor key, every anchored Procedure with its salt and leaf reference (without the
salt a procedure can never be disclosed), and the idempotency key of every claim it submitted
(so a retry after a lost answer never files the claim twice).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claimproof_cli import CliError, usage

DEFAULT_PATH = Path("~/.claimproof/store.sqlite3")
SCHEMA = """
CREATE TABLE IF NOT EXISTS config (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY,
    private_jwk TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at TEXT NOT NULL,
    provider_id INTEGER,
    registered_at TEXT
);
CREATE TABLE IF NOT EXISTS procedures (
    ref TEXT PRIMARY KEY,            -- the Procedure's id, or its commitment's first 16 hex digits
    procedure_jcs BLOB NOT NULL,     -- RFC 8785 bytes of the Procedure, exactly as committed
    salt BLOB NOT NULL,
    commitment BLOB NOT NULL UNIQUE,
    statement BLOB NOT NULL,         -- the signed anchor statement (the leaf data), resent as is
    full_url TEXT NOT NULL,
    leaf_index INTEGER,              -- NULL until the node answered
    leaf_hash BLOB,
    created_at TEXT NOT NULL,
    anchored_at TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    body_sha256 TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    claim_id TEXT,
    url TEXT,
    created_at TEXT NOT NULL,
    submitted_at TEXT
);
"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Procedure:
    ref: str
    procedure: dict[str, Any]
    salt: bytes
    commitment: bytes
    statement: bytes
    full_url: str
    leaf_index: int | None
    leaf_hash: bytes | None

    @property
    def anchored(self) -> bool:
        return self.leaf_index is not None and self.leaf_hash is not None


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    private_jwk: dict[str, str]
    public_jwk: dict[str, str]
    provider_id: int | None


class Store:
    """A thin wrapper over the SQLite file; every write commits at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                # Create it owner-only before SQLite writes a single secret into it.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise usage(f"cannot open the local store {path}: {exc}") from exc

    @classmethod
    def open(cls, path: str | None) -> Store:
        chosen = path or os.environ.get("CLAIMPROOF_STORE") or str(DEFAULT_PATH)
        return cls(Path(chosen).expanduser())

    def close(self) -> None:
        self.db.close()

    # --- config --------------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM config WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO config (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # --- signing keys --------------------------------------------------------------------------

    def key_add(self, private_jwk: dict[str, str], public_jwk: dict[str, str]) -> None:
        self.db.execute(
            "INSERT INTO keys (kid, private_jwk, public_jwk, created_at) VALUES (?, ?, ?, ?)",
            (public_jwk["kid"], json.dumps(private_jwk), json.dumps(public_jwk), now()),
        )
        self.set("current_kid", public_jwk["kid"])

    def key(self, kid: str | None = None) -> Key:
        kid = kid or self.get("current_kid")
        if not kid:
            raise usage("no signing key in the store: run `claimproof key generate` first")
        row = self.db.execute(
            "SELECT kid, private_jwk, public_jwk, provider_id FROM keys WHERE kid = ?", (kid,)
        ).fetchone()
        if row is None:
            raise usage(f"no signing key {kid!r} in the store {self.path}")
        return Key(row[0], json.loads(row[1]), json.loads(row[2]), row[3])

    def key_registered(self, kid: str, provider_id: int) -> None:
        self.db.execute(
            "UPDATE keys SET provider_id = ?, registered_at = ? WHERE kid = ?",
            (provider_id, now(), kid),
        )
        self.set("provider_id", str(provider_id))

    # --- anchored procedures -------------------------------------------------------------------

    _PROCEDURE_COLUMNS = (
        "ref, procedure_jcs, salt, commitment, statement, full_url, leaf_index, leaf_hash"
    )

    def _procedure(self, row: tuple | None) -> Procedure | None:
        if row is None:
            return None
        ref, jcs, salt, commitment, statement, full_url, index, leaf_hash = row
        return Procedure(
            ref, json.loads(jcs), salt, commitment, statement, full_url, index, leaf_hash
        )

    def procedure(self, ref: str) -> Procedure | None:
        row = self.db.execute(
            f"SELECT {self._PROCEDURE_COLUMNS} FROM procedures WHERE ref = ?",  # noqa: S608
            (ref,),
        ).fetchone()
        return self._procedure(row)

    def procedure_by_content(self, jcs: bytes) -> Procedure | None:
        row = self.db.execute(
            f"SELECT {self._PROCEDURE_COLUMNS} FROM procedures WHERE procedure_jcs = ?",  # noqa: S608
            (jcs,),
        ).fetchone()
        return self._procedure(row)

    def procedure_by_leaf(self, index: int) -> Procedure | None:
        row = self.db.execute(
            f"SELECT {self._PROCEDURE_COLUMNS} FROM procedures WHERE leaf_index = ?",  # noqa: S608
            (index,),
        ).fetchone()
        return self._procedure(row)

    def procedures(self) -> Iterator[Procedure]:
        rows = self.db.execute(
            f"SELECT {self._PROCEDURE_COLUMNS} FROM procedures ORDER BY created_at, ref"  # noqa: S608
        )
        for row in rows:
            procedure = self._procedure(row)
            assert procedure is not None
            yield procedure

    def procedure_add(self, p: Procedure, jcs: bytes) -> None:
        """Keep the salt and the signed statement *before* sending it: a retry resends them."""
        try:
            self.db.execute(
                "INSERT INTO procedures (ref, procedure_jcs, salt, commitment, statement, "
                "full_url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (p.ref, jcs, p.salt, p.commitment, p.statement, p.full_url, now()),
            )
        except sqlite3.IntegrityError as exc:
            raise CliError(f"procedure {p.ref!r} is already in the store", 2) from exc

    def procedure_anchored(self, ref: str, leaf_index: int, leaf_hash: bytes) -> None:
        self.db.execute(
            "UPDATE procedures SET leaf_index = ?, leaf_hash = ?, anchored_at = ? WHERE ref = ?",
            (leaf_index, leaf_hash, now(), ref),
        )

    # --- submitted claims ----------------------------------------------------------------------

    def idempotency_key(self, body_sha256: str, new_key: str) -> str:
        """The key this exact body was (or is now) sent with: the same on every retry."""
        self.db.execute(
            "INSERT INTO claims (body_sha256, idempotency_key, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (body_sha256) DO NOTHING",
            (body_sha256, new_key, now()),
        )
        row = self.db.execute(
            "SELECT idempotency_key FROM claims WHERE body_sha256 = ?", (body_sha256,)
        ).fetchone()
        return row[0]

    def claim_submitted(self, body_sha256: str, key: str, claim_id: str, url: str) -> None:
        # An explicit --idempotency-key already used for another body is not kept (the node
        # refused or answered it with its first claim).
        with contextlib.suppress(sqlite3.IntegrityError):
            self.db.execute(
                "INSERT INTO claims (body_sha256, idempotency_key, claim_id, url, created_at, "
                "submitted_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (body_sha256) DO UPDATE SET "
                "claim_id = excluded.claim_id, url = excluded.url, "
                "submitted_at = excluded.submitted_at",
                (body_sha256, key, claim_id, url, now(), now()),
            )
