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


def wait_for(predicate, timeout_s: float = 30.0):
    """Poll ``predicate`` until it returns something true (a worker is doing the work)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("the worker did not get there in time")


def approved_by_the_worker(
    n: int, kit: cf.ProviderKit | None = None, *, left_verified: int = 0
) -> list[Claim]:
    """``n`` claims submitted through the intake, verified by the running Celery worker, then
    approved by an adjuster except the last ``left_verified``: for tests with a
    ``celery_worker``."""
    role_groups()
    kit = kit or cf.make_provider()
    adjuster = user_with(Role.ADJUSTER)
    anchored = [
        cf.anchor_procedure(cf.procedure(), kit.provider.member.name, seal=False) for _ in range(n)
    ]
    ledger.ledger_seal_and_cosign()
    ids = [cf.claim_for(kit, [a])[0].pk for a in anchored]  # the intake queues verification
    wait_for(
        lambda: (
            set(Claim.objects.filter(pk__in=ids).values_list("status", flat=True))
            == {ClaimStatus.VERIFIED}
        )
    )
    for claim_id in ids[: n - left_verified]:
        claim_approve(claim_id=claim_id, user=adjuster)
    return list(Claim.objects.filter(pk__in=ids).order_by("pk"))
