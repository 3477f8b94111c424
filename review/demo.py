"""The adjusters' side of the demo: staff logins for every role, and decisions made through the
real services on the demo claims, so the queue, the dashboard and the audit trail have a story:
approved and paid claims, four-eyes claims waiting for their second approval, denials, requests
for information (open and answered), claims under review, and others still to decide."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import F

from claims.models import Claim, ClaimEvent
from claims.states import ClaimStatus
from review import services
from review.models import Payout
from review.roles import Role

S = ClaimStatus

# username, role, what they do, admin access
DEMO_STAFF = [
    ("alice", Role.ADJUSTER, "adjuster", False),
    ("bob", Role.ADJUSTER, "adjuster", False),
    ("carol", Role.SENIOR_ADJUSTER, "senior adjuster", False),
    ("dave", Role.AUDITOR, "auditor (read-only)", False),
    ("olga", Role.OPERATOR, "operator: batch jobs and payment runs", True),
]


def demo_staff() -> list[str]:
    """Create the staff users that do not exist yet; answer their login lines."""
    User = get_user_model()
    lines = []
    for username, role, what, staff in DEMO_STAFF:
        if User.objects.filter(username=username).exists():
            continue
        password = secrets.token_urlsafe(9)
        user = User.objects.create_user(username, password=password, is_staff=staff)
        user.groups.add(Group.objects.get(name=role.value))
        lines.append(f"{username} / {password}   ({what})")
    return lines


def _staff(name: str):
    return get_user_model().objects.get(username=name)


def _answer(claim: Claim) -> None:
    provider_user = claim.provider.users.first().user
    services.info_answer(
        claim_id=claim.pk,
        user=provider_user,
        attachment={
            "resourceType": "DocumentReference",
            "status": "current",
            "description": "Operative report",
            "content": [
                {
                    "attachment": {
                        "contentType": "application/pdf",
                        "title": "operative-report.pdf",
                        "size": 48213,
                    }
                }
            ],
        },
        text="Operative report attached; the procedure was performed as billed.",
    )


def demo_decide() -> dict[str, int]:
    """Decide on the verified demo claims, in a fixed pattern so every state is represented."""
    alice, bob, carol = _staff("alice"), _staff("bob"), _staff("carol")
    done: dict[str, int] = {}

    def count(what: str) -> None:
        done[what] = done.get(what, 0) + 1

    decidable = list(Claim.objects.filter(status__in=[S.VERIFIED, S.NEEDS_REVIEW]).order_by("pk"))
    for claim in decidable:
        four_eyes = services.approvals_needed(claim) > 1
        slot = (claim.pk * 7 + claim.pk // 10) % 10  # spread decisions over every price
        if claim.status == S.NEEDS_REVIEW:
            if slot < 3:
                services.claim_hold(claim_id=claim.pk, user=carol)
                count("held")
            elif slot < 5:
                services.claim_approve(claim_id=claim.pk, user=carol, note="reviewed the records")
                count("approved")
            continue
        if slot in (0, 1, 2, 3):
            if four_eyes:
                services.claim_approve(claim_id=claim.pk, user=alice)
                if slot < 2:
                    services.claim_approve(claim_id=claim.pk, user=carol)
                    count("approved (two adjusters)")
                else:
                    count("waiting for a second approval")
            else:
                services.claim_approve(claim_id=claim.pk, user=alice)
                count("approved")
        elif slot == 4:
            services.claim_deny(
                claim_id=claim.pk,
                user=bob,
                reason_code="50",
                text="The records do not support medical necessity for this procedure.",
            )
            count("denied")
        elif slot == 5:
            services.claim_request_info(
                claim_id=claim.pk,
                user=bob,
                reason_code="operative-report",
                question="Please send the operative report for this procedure.",
            )
            asked = done.get("information requested", 0) + done.get("information received", 0)
            if asked % 4 == 3:  # every fourth request is answered
                _answer(claim)
                count("information received")
            else:
                count("information requested")
        elif slot == 6 and not four_eyes:
            services.item_decide(
                claim_id=claim.pk,
                user=alice,
                sequence=1,
                action="adjust",
                amount=(claim.items.get(sequence=1).submitted * Decimal("0.8")).quantize(
                    Decimal("0.01")
                ),
                reason_code="45",
            )
            services.claim_approve(claim_id=claim.pk, user=alice, note="paid at the fee schedule")
            count("approved with an adjusted item")
        # the rest stay in the queue, to decide
    return done


def demo_backdate(days: int = 30) -> None:
    """Spread the demo claims over the last ``days`` days, so the dashboard has a history. Only
    display times move (claims, their events and payouts); ledger and audit times stay true."""
    # Claims not verified yet keep their times: the binding check compares them with the anchors'.
    waiting = [S.RECEIVED, S.VERIFYING]
    claims = list(
        Claim.objects.exclude(status__in=waiting).order_by("pk").values_list("pk", flat=True)
    )
    if not claims:
        return
    with transaction.atomic():
        for i, pk in enumerate(claims):
            shift = timedelta(days=days * (len(claims) - i) / len(claims), minutes=i % 47)
            Claim.objects.filter(pk=pk).update(
                created_at=F("created_at") - shift, updated_at=F("updated_at") - shift
            )
            ClaimEvent.objects.filter(claim_id=pk).update(at=F("at") - shift)
            Payout.objects.filter(claim_id=pk).update(created_at=F("created_at") - shift)
