"""`make run` loads a demo a newcomer can explore: logins for every role, a ledger, providers
with tokens, and claims in every state, each fraud rejected by the check that catches it."""

import io

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from claims.models import Claim, ClaimCheck, Provider
from claims.states import ClaimStatus
from claims.verification import claim_verify
from ledger.models import Leaf
from review.models import Approval, InfoRequest, Payout
from review.roles import Role, user_roles

pytestmark = pytest.mark.django_db
S = ClaimStatus


def _failed(claim: Claim) -> set[str]:
    rows = ClaimCheck.objects.filter(claim=claim, run=claim.verification_runs, outcome="fail")
    return {name.split(":")[0] for name in rows.values_list("name", flat=True)}


def test_demo_load_tells_the_whole_story_once():
    call_command("ledger_init", stdout=io.StringIO())
    out = io.StringIO()
    call_command("demo_load", anchors=3, claims=30, live=2, stdout=out)
    assert Leaf.objects.count() > 9
    assert Provider.objects.count() == 2
    assert Claim.objects.count() == 2 * 30 + 9

    logins = (settings.VAR_DIR / "demo-logins.txt").read_text()
    assert "admin /" in logins and "API token" in logins
    users = get_user_model().objects
    for name, role in [
        ("alice", Role.ADJUSTER),
        ("carol", Role.SENIOR_ADJUSTER),
        ("dave", Role.AUDITOR),
        ("olga", Role.OPERATOR),
    ]:
        assert f"{name} /" in logins
        assert role in user_roles(users.get(username=name))

    by_status = {s: Claim.objects.filter(status=s).count() for s in S}
    for state in (
        S.PAID,
        S.RECEIVED,
        S.VERIFIED,
        S.NEEDS_REVIEW,
        S.REJECTED,
        S.APPROVED,
        S.DENIED,
        S.INFO_REQUESTED,
    ):
        assert by_status[state] > 0, (state, by_status)
    assert Payout.objects.count() == by_status[S.APPROVED] + by_status[S.PAID]
    assert InfoRequest.objects.filter(answered_at__isnull=False).exists()
    waiting = [c for c in Claim.objects.filter(status=S.VERIFIED) if c.approvals.exists()]
    assert waiting, "a four-eyes claim waits for its second approval"
    assert Approval.objects.values("claim").distinct().count() < Approval.objects.count()

    from audit.models import AuditEntry

    assert not AuditEntry.objects.filter(seq__isnull=True).exists()  # chained and anchored

    frauds = Claim.objects.filter(provider_reference="", status=S.REJECTED)
    assert sorted(sorted(_failed(c)) for c in frauds) == sorted(
        [
            ["signature"],
            ["signature"],
            ["procedure"],
            ["procedure"],
            ["binding"],
            ["binding"],
            ["binding"],
            ["double_billing"],
        ]
    )
    live = Claim.objects.filter(status=S.RECEIVED)
    assert {claim_verify(claim_id=c.pk).status for c in live} <= {S.VERIFIED, S.NEEDS_REVIEW}

    call_command("demo_load", anchors=3, claims=30, stdout=io.StringIO())
    assert Claim.objects.count() == 2 * 30 + 9  # loaded once
