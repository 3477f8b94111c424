"""Writing the audit trail. Call :func:`audit_record` inside the transaction of the action it
records, so the entry exists exactly when the action does."""

from __future__ import annotations

from django.utils import timezone

from audit.models import AuditEntry


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return getattr(actor, "get_username", lambda: str(actor))()


def audit_record(
    *, actor, action: str, target: str, why: str = "", data: dict | None = None
) -> AuditEntry:
    return AuditEntry.objects.create(
        at=timezone.now(),
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=actor_label(actor),
        action=action,
        target=target,
        why=why,
        data=data or {},
    )
