"""Where the node's secret keys come from: environment variables or files under var/keys/.

Never from the code or the database. ``manage.py ledger_init`` writes the files for a demo node.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ledger import note


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def operator_signer_key() -> str:
    """The log operator's Go-format signer key (LEDGER_OPERATOR_KEY, else its file)."""
    if settings.LEDGER_OPERATOR_KEY:
        return settings.LEDGER_OPERATOR_KEY
    path = settings.LEDGER_OPERATOR_KEY_FILE
    if not path.exists():
        raise ImproperlyConfigured(
            f"No log operator key: set LEDGER_OPERATOR_KEY or run `manage.py ledger_init` "
            f"to create {path}"
        )
    return _read(path)


def operator_verifier_key() -> str:
    return note.verifier_key(operator_signer_key())


def witnesses_dir() -> Path:
    return settings.LEDGER_KEYS_DIR / "witnesses"


def members_dir() -> Path:
    return settings.LEDGER_KEYS_DIR / "members"


def witness_key_env(name: str) -> str:
    """The environment variable that holds witness ``name``'s signer key."""
    return "LEDGER_WITNESS_KEY_" + name.upper().replace("-", "_").replace(".", "_")


def local_witness_signer_key(name: str) -> str | None:
    """The cosigning key of a witness hosted on this node, if this node holds it.

    From ``LEDGER_WITNESS_KEY_<NAME>`` (name upper-cased, '-' and '.' as '_'), else
    ``var/keys/witnesses/<name>.key``.
    """
    var = witness_key_env(name)
    if value := os.environ.get(var):
        return value.strip()
    path = witnesses_dir() / f"{name}.key"
    return _read(path) if path.exists() else None


def write_secret(path: Path, value: str) -> None:
    """Write a secret key file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
