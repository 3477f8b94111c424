"""Reads worth a name. Providers see their own things only: anything else is 404, never 403."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from rest_framework.exceptions import PermissionDenied

from claims.models import Claim, ClaimCheck, Provider, ProviderKey
from config.errors import NotFound


def provider_for_user(user) -> Provider:
    link = getattr(user, "provider_link", None)
    if link is None:
        raise PermissionDenied("this API is for provider users; this user is bound to no provider")
    return link.provider


def own_provider(user, provider_id: int) -> Provider:
    provider = provider_for_user(user)
    if provider.pk != provider_id:
        raise NotFound("no such provider", code="unknown_provider")
    return provider


def provider_key(provider: Provider, kid: str) -> ProviderKey:
    key = ProviderKey.objects.filter(provider=provider, kid=kid).first()
    if key is None:
        raise NotFound(f"no key {kid!r}", code="unknown_key")
    return key


def claims_for_provider(provider: Provider) -> QuerySet[Claim]:
    return Claim.objects.filter(provider=provider).prefetch_related("items").order_by("-created_at")


def claim_for_provider(*, provider: Provider, public_id: str) -> Claim:
    try:
        wanted = uuid.UUID(str(public_id))
    except ValueError:
        wanted = None
    claim = (
        Claim.objects.filter(provider=provider, public_id=wanted).first()
        if wanted is not None
        else None
    )
    if claim is None:
        raise NotFound("no such claim", code="unknown_claim")
    return claim


def claim_latest_checks(claim: Claim) -> list[ClaimCheck]:
    if not claim.verification_runs:
        return []
    return list(claim.checks.filter(run=claim.verification_runs).order_by("id"))
