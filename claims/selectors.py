"""Reads worth a name. Providers see their own things only: anything else is 404, never 403."""

from __future__ import annotations

import threading
import time
import uuid

from django.db.models import QuerySet
from rest_framework.exceptions import PermissionDenied

from claims.models import Claim, ClaimCheck, Provider, ProviderKey, ProviderUser
from config.errors import NotFound

KEY_OWNER_TTL_S = 60.0  # how long a process trusts what it read of a key's owner
KEY_OWNER_MAX = 10_000  # kids remembered per process (then it starts again)
_key_owners: dict[str, tuple[int, float]] = {}  # kid -> (provider id, read at, monotonic)
_key_owners_lock = threading.Lock()


def provider_for_user(user) -> Provider:
    """The user's provider, read on every request (an unbound user loses access at once): one
    query with its provider."""
    if not getattr(user, "pk", None):
        raise PermissionDenied("this API is for provider users; this user is bound to no provider")
    link = ProviderUser.objects.select_related("provider").filter(user_id=user.pk).first()
    if link is None:
        raise PermissionDenied("this API is for provider users; this user is bound to no provider")
    return link.provider


def key_owner(kid: str) -> int | None:
    """The id of the provider whose signing key is ``kid``; None for a key nobody registered.

    Intake asks this for every claim. A key's owner never changes (a kid is unique and keys are
    never moved), so each process remembers a found owner for KEY_OWNER_TTL_S; an unknown kid is
    not remembered (a key registered a moment ago is found at once). Validity and revocation
    are not looked at here: verification checks them against the database on every run."""
    now = time.monotonic()
    hit = _key_owners.get(kid)
    if hit is not None and now - hit[1] < KEY_OWNER_TTL_S:
        return hit[0]
    owner = ProviderKey.objects.filter(kid=kid).values_list("provider_id", flat=True).first()
    if owner is not None:
        with _key_owners_lock:
            if len(_key_owners) >= KEY_OWNER_MAX:
                _key_owners.clear()
            _key_owners[kid] = (owner, now)
    return owner


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
