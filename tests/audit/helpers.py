"""Building an audit trail for tests, recomputing its hashes without audit.chain, and altering it
behind the application's back (raw SQL with the PostgreSQL triggers switched off)."""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from datetime import UTC

import rfc8785
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEntry
from audit.services import audit_record
from ledger import services


def node() -> None:
    call_command("ledger_init", stdout=io.StringIO())


def record(n: int, actor=None, **kwargs) -> list[AuditEntry]:
    return [
        audit_record(
            actor=actor,
            action=kwargs.get("action", "claim.approve"),
            target=kwargs.get("target", f"claim:00000000-0000-0000-0000-{i:012d}"),
            why=kwargs.get("why", f"reason {i}"),
            data=kwargs.get("data", {"approval": i, "amount": "105.00", "note": "é ✓"}),
        )
        for i in range(n)
    ]


def two_anchor_trail() -> None:
    """Entries #1-#6 anchored at one seal, #7-#8 at the next."""
    node()
    user = get_user_model().objects.create_user("adj-1")
    record(3, actor=user)
    record(3, action="claim.deny", why="not covered")
    services.ledger_seal_and_cosign()
    record(2, actor=user, action="payout.create", data={"amount": "12.50"})
    services.ledger_seal_and_cosign()


def independent_hash(prev: bytes, row: dict) -> bytes:
    """The entry hash as docs/audit-trail.md specifies it, written from the document."""
    fields = {
        "action": row["action"],
        "actor": row["actor_id"],
        "actor_label": row["actor_label"],
        "at": row["at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": row["data"],
        "id": row["id"],
        "seq": row["seq"],
        "target": row["target"],
        "why": row["why"],
    }
    return hashlib.sha256(prev + rfc8785.dumps(fields)).digest()


def chained_rows() -> list[dict]:
    return list(AuditEntry.objects.filter(seq__isnull=False).order_by("seq").values())


@contextmanager
def tampering():
    """A cursor that writes past the append-only triggers, as a database superuser could."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


def rehash_from(seq: int) -> None:
    """What a careful forger does after an alteration: recompute every stored hash from ``seq``
    on, so that each entry links to the one before it again."""
    rows = chained_rows()
    prev = bytes(rows[seq - 2]["hash"]) if seq > 1 else bytes(32)
    with tampering() as cursor:
        for row in rows[seq - 1 :]:
            h = independent_hash(prev, row)
            cursor.execute("UPDATE audit_auditentry SET hash = %s WHERE id = %s", [h, row["id"]])
            prev = h
