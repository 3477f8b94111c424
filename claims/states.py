"""Claim states and the one function allowed to move a claim between them.

Nothing else writes ``Claim.status``: not views, not tasks, not the admin. A transition is a
compare-and-set (the row moves only from the state we read), recorded as one ``ClaimEvent`` with
who, why and a snapshot, and one audit trail entry (action ``claim.status``), in the same
transaction.
"""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone


class ClaimStatus(models.TextChoices):
    RECEIVED = "received", "received"
    VERIFYING = "verifying", "verifying"
    VERIFIED = "verified", "verified"
    NEEDS_REVIEW = "needs_review", "needs review"
    REJECTED = "rejected", "rejected"
    INFO_REQUESTED = "info_requested", "information requested"
    APPROVED = "approved", "approved"
    DENIED = "denied", "denied"
    PAID = "paid", "paid"
    SUPERSEDED = "superseded", "superseded by a correction"
    VOIDED = "voided", "voided"


S = ClaimStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    S.RECEIVED: frozenset({S.VERIFYING, S.SUPERSEDED, S.VOIDED}),
    # Verification may wait (checkpoint not final yet) and run again: verifying -> verifying.
    S.VERIFYING: frozenset({S.VERIFYING, S.VERIFIED, S.NEEDS_REVIEW, S.REJECTED}),
    S.VERIFIED: frozenset(
        {
            S.APPROVED,
            S.DENIED,
            S.INFO_REQUESTED,
            S.VERIFYING,
            S.SUPERSEDED,
            S.VOIDED,
            S.NEEDS_REVIEW,
        }
    ),
    S.NEEDS_REVIEW: frozenset(
        {S.APPROVED, S.DENIED, S.INFO_REQUESTED, S.VERIFYING, S.SUPERSEDED, S.VOIDED}
    ),
    S.INFO_REQUESTED: frozenset({S.NEEDS_REVIEW, S.VERIFYING, S.DENIED, S.SUPERSEDED, S.VOIDED}),
    S.REJECTED: frozenset({S.VERIFYING, S.SUPERSEDED, S.VOIDED}),
    S.APPROVED: frozenset({S.PAID}),
    S.DENIED: frozenset(),
    S.PAID: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.VOIDED: frozenset(),
}
# States in which a claim still bills its procedures (the double-billing index covers these).
LIVE = frozenset(set(S) - {S.REJECTED, S.DENIED, S.SUPERSEDED, S.VOIDED})
FINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class InvalidTransition(Exception):
    def __init__(self, old: str, new: str):
        super().__init__(f"a claim cannot go from {old} to {new}")
        self.old, self.new = old, new


class ConcurrentTransition(Exception):
    """Someone else moved the claim first; nothing was changed."""


def claim_transition(*, claim, to: str, actor=None, reason: str = "", snapshot: dict | None = None):
    """Move ``claim`` to ``to`` if the table allows it and nobody moved it since it was read."""
    return claim_transitions(claim=claim, steps=[(to, reason, snapshot)], actor=actor)


def claim_transitions(
    *,
    claim,
    steps: list[tuple[str, str, dict | None]],
    actor=None,
    fields: dict | None = None,
):
    """Move ``claim`` through ``steps`` (to, reason, snapshot), each allowed by the table from
    the one before, in one UPDATE (which also writes ``fields``, other columns of the claim)
    and one INSERT of a ``ClaimEvent`` per step: what a verification run does on its way from
    received through verifying to its verdict."""
    from audit.models import AuditEntry
    from claims.models import BilledAnchor, Claim, ClaimEvent

    old = at = claim.status
    leaves_live = False
    for to, _, _ in steps:
        if to not in TRANSITIONS.get(at, frozenset()):
            raise InvalidTransition(at, to)
        leaves_live |= at in LIVE and to not in LIVE
        at = to
    now = timezone.now()
    values = {"updated_at": now, **(fields or {}), "status": at}
    # savepoint=False saves two round trips inside a caller's transaction; nothing inside raises
    # on the expected path, so a caller catching ConcurrentTransition keeps a usable transaction.
    with transaction.atomic(savepoint=False):
        moved = Claim.objects.filter(pk=claim.pk, status=old).update(**values)
        if moved == 1:
            if leaves_live:
                BilledAnchor.objects.filter(claim_id=claim.pk).update(live=False)
            events, before = [], old
            for to, reason, snapshot in steps:
                events.append(
                    ClaimEvent(
                        claim_id=claim.pk,
                        at=values["updated_at"],
                        actor=actor,
                        old_status=before,
                        new_status=to,
                        reason=reason,
                        snapshot=snapshot or {},
                    )
                )
                before = to
            ClaimEvent.objects.bulk_create(events)
            AuditEntry.objects.bulk_create(
                _audit_entries(claim, old, steps, actor, values["updated_at"])
            )
    if moved != 1:
        raise ConcurrentTransition(f"claim {claim.pk} is no longer {old}")
    for name, value in values.items():
        setattr(claim, name, value)
    return claim


def _audit_entries(claim, old: str, steps: list[tuple[str, str, dict | None]], actor, now):
    """One audit entry per step (verdicts, approvals, denials, payments...): who, why, from and to,
    and the step's snapshot when it has a canonical JSON form (it always has in this code base;
    an odd one is left out rather than failing the transition)."""
    from audit.services import audit_entry

    entries, before, target = [], old, f"claim:{claim.public_id}"
    for to, reason, snapshot in steps:
        data = {"from": str(before), "to": str(to)}
        if snapshot:
            data["snapshot"] = snapshot
        try:
            entry = audit_entry(
                actor=actor, action="claim.status", target=target, why=reason, data=data, at=now
            )
        except (TypeError, ValueError):
            data["snapshot"] = "(not recorded: it has no canonical JSON form)"
            entry = audit_entry(
                actor=actor, action="claim.status", target=target, why=reason, data=data, at=now
            )
        entries.append(entry)
        before = to
    return entries
