"""Workspace users with roles, and claims ready for a decision (built through the real intake
and verification, see tests/claims/factories.py)."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from claims.models import Claim
from claims.states import ClaimStatus
from review.roles import Role
from tests.claims import factories as cf

_numbers = itertools.count(1)
PASSWORD = "correct horse battery staple"  # test users only


def user_with(*roles: Role, username: str | None = None):
    """A workspace user holding ``roles`` (none: a signed-in user with no role)."""
    user = get_user_model().objects.create_user(
        username or f"user-{next(_numbers)}", password=PASSWORD
    )
    for role in roles:
        # get_or_create: live-server and threaded tests flush every table, groups included
        user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    return user


def decidable_claim(
    kit: cf.ProviderKit | None = None,
    *,
    unit_price: str = "105.00",
    procedures: int = 1,
    status: str = ClaimStatus.VERIFIED,
) -> Claim:
    """A submitted, anchored, verified claim (verified, or needs_review when ``unit_price`` is
    above the review threshold), billing ``procedures`` procedures at ``unit_price`` each."""
    kit = kit or cf.make_provider()
    anchored = [
        cf.anchor_procedure(cf.procedure(), kit.provider.member.name, seal=False)
        for _ in range(procedures)
    ]
    from ledger import services

    services.ledger_seal_and_cosign()
    claim, _ = cf.claim_for(kit, anchored, unit_price=unit_price)
    claim = cf.verified(claim)
    assert claim.status == status, (claim.status, cf.checks(claim))
    return claim
