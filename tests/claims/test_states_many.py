"""``claim_transitions_many`` moves many claims as ``claim_transitions`` moves each one (the same
claim columns, events, audit entries and released anchors), in a constant number of statements;
a claim someone else moved first is reported and left alone; an illegal step writes nothing.
Runs on PostgreSQL, and on SQLite in ``make test``'s second pass (UPDATE ... FROM ... RETURNING).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.chain import audit_chain
from audit.models import AuditEntry
from claims.models import BilledAnchor, Claim, ClaimEvent
from claims.states import (
    ClaimStatus,
    ConcurrentTransition,
    InvalidTransition,
    claim_transition,
    claim_transitions,
    claim_transitions_many,
)
from tests.audit import helpers as audit_helpers
from tests.claims.factories import claim_for, make_provider

pytestmark = pytest.mark.django_db
S = ClaimStatus


def _claims(n: int) -> list[Claim]:
    kit = make_provider()
    return [claim_for(kit)[0] for _ in range(n)]


def _billing(claim: Claim, commitment: bytes) -> None:
    BilledAnchor.objects.create(claim=claim, commitment=commitment, leaf_index=1, live=True)


def _moves(claims: list[Claim]) -> list[tuple]:
    """Four kinds of move: a verdict with every field, a first wait (another set of fields),
    a verdict that leaves the live states (anchors released), a move with no steps."""
    now = timezone.now()
    verified, waiting, rejected, still = claims
    snapshot = {"run": 1, "checks": {"signature": "pass", "fhir": "pass"}}
    return [
        (verified, [(S.VERIFYING, "verification run 1", None),
                    (S.VERIFIED, "every check passed", snapshot)],
         {"verification_runs": 1, "updated_at": now, "verdict": S.VERIFIED,
          "waiting_since": None}),
        (waiting, [(S.VERIFYING, "verification run 1", None),
                   (S.VERIFYING, "waiting for a final checkpoint", snapshot)],
         {"verification_runs": 1, "updated_at": now, "waiting_since": now}),
        (rejected, [(S.REJECTED, "the signature does not verify", snapshot)],
         {"verification_runs": 2, "updated_at": now, "verdict": S.REJECTED,
          "waiting_since": None}),
        (still, [], {"verification_runs": 1, "updated_at": now + timedelta(seconds=1)}),
    ]  # fmt: skip


def _prepared(claims: list[Claim], tag: bytes) -> None:
    """The third claim is verifying with a live anchor, the fourth waits already."""
    for claim in claims[2:]:
        claim_transition(claim=claim, to=S.VERIFYING)
    _billing(claims[2], tag * 32)
    Claim.objects.filter(pk=claims[3].pk).update(waiting_since=timezone.now())
    claims[3].refresh_from_db()


def _state(claim: Claim) -> dict:
    """Everything a transition writes about ``claim``, without ids and times."""
    row = Claim.objects.get(pk=claim.pk)
    target = f"claim:{claim.public_id}"
    return {
        "claim": (row.status, row.verdict, row.verification_runs, row.waiting_since is not None),
        "events": list(
            ClaimEvent.objects.filter(claim=claim)
            .exclude(old_status="")  # the submission differs (provider, key)
            .order_by("id")
            .values_list("old_status", "new_status", "reason", "snapshot", "actor")
        ),
        "audit": list(
            AuditEntry.objects.filter(target=target, action="claim.status")
            .order_by("id")
            .values_list("action", "actor", "actor_label", "why", "data")
        ),
        "live": sorted(BilledAnchor.objects.filter(claim=claim).values_list("live", flat=True)),
        "event_at_is_updated_at": all(
            at == row.updated_at
            for at in ClaimEvent.objects.filter(claim=claim, reason__in=_REASONS).values_list(
                "at", flat=True
            )
        ),
    }


_REASONS = [
    "verification run 1",
    "every check passed",
    "waiting for a final checkpoint",
    "the signature does not verify",
]


def test_many_claims_move_exactly_as_each_one_alone_does():
    actor = get_user_model().objects.create_user("batch-operator")
    alone, together = _claims(4), _claims(4)
    _prepared(alone, b"a")
    _prepared(together, b"b")

    for claim, steps, fields in _moves(alone):
        claim_transitions(claim=claim, steps=steps, fields=fields, actor=actor)
    lost = claim_transitions_many(_moves(together), actor=actor)

    assert lost == []
    assert [_state(c) for c in together] == [_state(c) for c in alone]
    expected = [S.VERIFIED, S.VERIFYING, S.REJECTED, S.VERIFYING]
    assert [c.status for c in together] == expected  # updated in place, as claim_transitions
    assert [Claim.objects.get(pk=c.pk).status for c in together] == expected
    assert _state(together[2])["live"] == [False]  # rejected: its anchor is free again
    assert together[1].waiting_since is not None and together[0].waiting_since is None
    rejected = _state(together[2])["audit"][-1]
    assert rejected[3] == "the signature does not verify"
    assert rejected[4]["from"] == S.VERIFYING and rejected[4]["to"] == S.REJECTED


def test_a_claim_someone_moved_first_is_reported_and_left_alone():
    first, second, third = _claims(3)
    stale = Claim.objects.get(pk=second.pk)  # read before another worker moved it
    claim_transition(claim=second, to=S.VERIFYING, reason="another worker")
    events_before = ClaimEvent.objects.filter(claim=second).count()
    audit_before = AuditEntry.objects.filter(target=f"claim:{second.public_id}").count()

    moves = [(c, [(S.VERIFYING, "verification run 1", None)], {"verification_runs": 1})
             for c in (first, stale, third)]  # fmt: skip
    lost = claim_transitions_many(moves)

    assert lost == [stale]
    assert stale.status == S.RECEIVED  # the object is left as it was read
    row = Claim.objects.get(pk=second.pk)
    assert (row.status, row.verification_runs) == (S.VERIFYING, 0)  # not written
    assert ClaimEvent.objects.filter(claim=second).count() == events_before
    assert AuditEntry.objects.filter(target=f"claim:{second.public_id}").count() == audit_before
    for claim in (first, third):
        assert Claim.objects.get(pk=claim.pk).status == S.VERIFYING
        assert ClaimEvent.objects.filter(claim=claim).latest("id").new_status == S.VERIFYING
    # the same loss, one claim at a time
    with pytest.raises(ConcurrentTransition):
        claim_transitions(claim=stale, steps=[(S.VERIFYING, "again", None)])


def test_an_illegal_step_anywhere_raises_before_anything_is_written():
    claims = _claims(3)
    before = [_state(c) for c in claims]
    audit_count = AuditEntry.objects.count()
    moves = [
        (claims[0], [(S.VERIFYING, "run 1", None)], None),
        (claims[1], [(S.VERIFYING, "run 1", None), (S.PAID, "paid without approval", None)],
         None),
        (claims[2], [(S.VERIFYING, "run 1", None)], None),
    ]  # fmt: skip

    with pytest.raises(InvalidTransition, match="from verifying to paid"):
        claim_transitions_many(moves)

    assert [_state(c) for c in claims] == before
    assert AuditEntry.objects.count() == audit_count
    assert [c.status for c in claims] == [S.RECEIVED] * 3
    with pytest.raises(ValueError, match="twice"):
        claim_transitions_many([moves[0], moves[0]])


def test_statements_do_not_grow_with_the_number_of_claims():
    def statements(claims: list[Claim]) -> list[str]:
        for claim in claims:
            claim_transition(claim=claim, to=S.VERIFYING)
            _billing(claim, claim.public_id.bytes * 2)
        moves = [(c, [(S.REJECTED, "failed", {"run": 1})], {"verdict": S.REJECTED})
                 for c in claims]  # fmt: skip
        with CaptureQueriesContext(connection) as ctx:
            assert claim_transitions_many(moves) == []
        return [q["sql"].split()[0] for q in ctx.captured_queries]

    claims = _claims(10)
    three, seven = statements(claims[:3]), statements(claims[3:])
    # the claims, their anchors, their events, their audit entries (COPY on PostgreSQL)
    insert = "COPY" if connection.vendor == "postgresql" else "INSERT"
    assert three == seven == ["UPDATE", "UPDATE", insert, insert]
    assert not BilledAnchor.objects.filter(claim__in=claims, live=True).exists()


def test_the_audit_entries_are_chained_by_the_next_seal_as_any_others():
    audit_helpers.node()
    claims = _claims(3)
    claim_transitions_many([(c, [(S.VERIFYING, "verification run 1", None)], None) for c in claims])
    written = list(
        AuditEntry.objects.filter(
            target__in=[f"claim:{c.public_id}" for c in claims], action="claim.status"
        ).order_by("id")
    )
    assert [e.target for e in written] == [f"claim:{c.public_id}" for c in claims]
    assert all(e.seq is None for e in written)  # pending until a seal

    audit_chain()

    rows = audit_helpers.chained_rows()
    assert {e.pk for e in written} <= {r["id"] for r in rows}
    prev = bytes(32)
    for row in rows:  # recomputed from the document, not with audit.chain
        prev = audit_helpers.independent_hash(prev, row)
        assert bytes(row["hash"]) == prev


def test_without_returning_the_claims_move_one_by_one_with_the_same_answer(monkeypatch):
    from claims import states

    monkeypatch.setattr(states, "_update_from_returns", lambda: False)  # SQLite before 3.35
    first, second = _claims(2)
    stale = Claim.objects.get(pk=second.pk)
    claim_transition(claim=second, to=S.VERIFYING, reason="another worker")

    lost = claim_transitions_many(
        [(c, [(S.VERIFYING, "verification run 1", None)], None) for c in (first, stale)]
    )

    assert lost == [stale]
    assert first.status == Claim.objects.get(pk=first.pk).status == S.VERIFYING
    assert ClaimEvent.objects.filter(claim=second, reason="verification run 1").count() == 0
