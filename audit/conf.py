"""Which member's anchor key anchors this node's audit trail on the ledger.

``AUDIT_ANCHOR_MEMBER`` (setting, from the environment; default the demo insurer) names the
consortium member that operates this node; its anchor signer key comes from
``AUDIT_ANCHOR_KEY`` (environment) or ``var/keys/members/<member>.key``, never from the database.
"""

from __future__ import annotations

import os

from django.conf import settings

from ledger import keys

DEFAULT_MEMBER = "acme-insurance.example"


def anchor_member() -> str:
    return getattr(settings, "AUDIT_ANCHOR_MEMBER", "") or DEFAULT_MEMBER


def anchor_signer_key() -> str | None:
    """The member's anchor signer key (Go note format), or None when this node has none."""
    if value := os.environ.get("AUDIT_ANCHOR_KEY", "").strip():
        return value
    path = keys.members_dir() / f"{anchor_member()}.key"
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def chain_batch() -> int:
    """At most this many entries are chained per seal (the rest at the next one)."""
    return int(getattr(settings, "AUDIT_CHAIN_BATCH", 20_000))
