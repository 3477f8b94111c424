"""Approved claims with their payouts, built through the real intake, verification and the
adjusters' approval service (nothing mocked)."""

from __future__ import annotations

from django.contrib.auth.models import Group

from claims.models import Claim
from claims.states import ClaimStatus
from ledger import services as ledger
from review.roles import Role
from review.services import claim_approve
from tests.claims import factories as cf
from tests.review.factories import user_with


def role_groups() -> None:
    """The role groups (a migration makes them; transactional tests flush them)."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def approved_claims(
    n: int, kit: cf.ProviderKit | None = None, *, unit_price: str = "105.00", adjuster=None
) -> list[Claim]:
    """``n`` claims by ``kit`` (one seal for all), verified, approved: each has one payout."""
    role_groups()
    kit = kit or cf.make_provider()
    adjuster = adjuster or user_with(Role.ADJUSTER)
    anchored = [
        cf.anchor_procedure(cf.procedure(), kit.provider.member.name, seal=False) for _ in range(n)
    ]
    ledger.ledger_seal_and_cosign()
    claims = []
    for a in anchored:
        claim = cf.verified(cf.claim_for(kit, [a], unit_price=unit_price)[0])
        assert claim.status == ClaimStatus.VERIFIED, cf.checks(claim)
        approved = claim_approve(claim_id=claim.pk, user=adjuster)
        assert approved.payout is not None
        claims.append(Claim.objects.get(pk=claim.pk))
    return claims
