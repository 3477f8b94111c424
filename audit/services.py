"""Writing the audit trail. Call :func:`audit_record` inside the transaction of the action it
records, so the entry exists exactly when the action does.

Writing is one INSERT, with no lock and no hash: the next seal of the ledger chains the entry
(audit.chain). Until then the entry shows as pending.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from audit.chain import canonical
from audit.models import AuditEntry


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return getattr(actor, "get_username", lambda: str(actor))()


def _checked(data: dict | None) -> dict:
    """The data must have one canonical JSON form (it is hashed as RFC 8785 when chained): refuse
    here, in the action's transaction, what would otherwise fail at the seal."""
    data = data or {}
    if not isinstance(data, dict):
        raise TypeError("audit data is a JSON object")
    try:
        canonical(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit data has no canonical JSON form: {exc}") from exc
    return data


# An entry's columns as written, in the order of :func:`audit_values` (config.bulk.insert_rows).
ENTRY_FIELDS = ("at", "actor_id", "actor_label", "action", "target", "why", "data")


def audit_values(
    *,
    actor,
    action: str,
    target: str,
    why: str = "",
    data: dict | None = None,
    at: datetime | None = None,
) -> tuple:
    """An entry as a row of ``ENTRY_FIELDS``, for writing many at once."""
    actor_id = actor.pk if getattr(actor, "pk", None) else None
    return (at or timezone.now(), actor_id, actor_label(actor), action, target, why, _checked(data))


def audit_entry(
    *,
    actor,
    action: str,
    target: str,
    why: str = "",
    data: dict | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """An unsaved entry (for ``AuditEntry.objects.bulk_create``)."""
    row = audit_values(actor=actor, action=action, target=target, why=why, data=data, at=at)
    return AuditEntry(**dict(zip(ENTRY_FIELDS, row, strict=True)))


def audit_record(
    *, actor, action: str, target: str, why: str = "", data: dict | None = None
) -> AuditEntry:
    """Record one action: who (``actor``, None for the system), what (``action`` on
    ``target``), why, and the facts in ``data``."""
    entry = audit_entry(actor=actor, action=action, target=target, why=why, data=data)
    entry.save()
    return entry
