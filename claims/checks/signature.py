"""``signature``: the provider's key, judged when we received the claim, verifies the stored
canonical payload.

The time is ``Claim.created_at`` (receipt), never ``Bundle.signature.when``, which the signature
does not cover (docs/claim-format.md, "What Signature.when does not prove"): a signature we
received before a key's revocation was necessarily made before it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from claims import disclosure, jws
from claims.checks import FAIL, PASS, Context, Result, iso, short
from claims.models import ProviderKey

NAME = "signature"


def check(ctx: Context) -> Result:
    claim = ctx.claim
    received = claim.created_at
    evidence: dict = {"kid": claim.kid, "received_at": iso(received)}

    def fail(sentence: str) -> Result:
        return Result(NAME, FAIL, sentence, evidence)

    try:
        detached = jws.parse_detached(disclosure.signature_jws(ctx.bundle or {}))
    except (jws.JwsError, disclosure.DisclosureError) as exc:
        return fail(f"The Bundle's signature cannot be read: {exc}.")
    evidence["kid"] = detached.kid
    pre = ctx.prefetched
    if pre is not None and detached.kid in pre.keys:
        key = pre.keys[detached.kid]
    else:
        key = key_values([detached.kid]).get(detached.kid)
    if key is None:
        return fail(
            f"No provider key {short(detached.kid)} is registered (any more): the signature "
            "cannot be checked."
        )
    evidence.update(
        provider=key["provider__name"],
        key_not_before=iso(key["not_before"]),
        key_not_after=iso(key["not_after"]),
        key_revoked_at=iso(key["revoked_at"]),
        key_revocation_reason=key["revocation_reason"],
    )
    if key["provider_id"] != claim.provider_id:
        evidence["submitted_by"] = claim.provider.name
        return fail(
            f"Key {short(detached.kid)} belongs to {key['provider__name']}, not to the submitting "
            f"provider {claim.provider.name}."
        )
    if received < key["not_before"]:
        return fail(
            f"Key {short(detached.kid)} was not valid yet when we received the claim "
            f"({_at(received)}): it is valid from {_at(key['not_before'])}."
        )
    if key["not_after"] is not None and received >= key["not_after"]:
        return fail(
            f"Key {short(detached.kid)} had expired when we received the claim ({_at(received)}): "
            f"it was valid until {_at(key['not_after'])}."
        )
    if key["revoked_at"] is not None and key["revoked_at"] <= received:
        return fail(
            f"Key {short(detached.kid)} was revoked on {_at(key['revoked_at'])} "
            f"({key['revocation_reason'] or 'no reason given'}), before we received the claim "
            f"({_at(received)})."
        )
    when = _when(ctx.bundle)
    evidence["signature_when"] = iso(when)
    if when is not None and when > received + settings.LEDGER_ANCHOR_MAX_SKEW:
        return fail(
            f"Signature.when ({_at(when)}) is later than our receipt of the claim "
            f"({_at(received)}): a signature cannot come from the future."
        )
    try:
        public_key = jws.public_jwk_parse(key["public_jwk"])
        jws.verify_detached(detached, bytes(claim.signed_payload), public_key)
    except jws.JwsError as exc:
        return fail(
            f"The JWS does not verify under key {short(detached.kid)} over the canonical Bundle "
            f"we received ({exc}): the Bundle was changed after signing, or signed with another "
            "key."
        )
    revoked = (
        f", revoked later on {_at(key['revoked_at'])}" if key["revoked_at"] is not None else ""
    )
    return Result(
        NAME,
        PASS,
        f"Signed by {key['provider__name']} with key {short(detached.kid)}, valid when we "
        f"received the claim ({_at(received)}){revoked}.",
        evidence,
    )


KEY_FIELDS = (
    "kid",
    "provider_id",
    "provider__name",
    "public_jwk",
    "not_before",
    "not_after",
    "revoked_at",
    "revocation_reason",
)


def key_values(kids: list[str]) -> dict[str, dict]:
    """The registered keys among ``kids`` (what this check reads of each), by kid: one query."""
    return {k["kid"]: k for k in ProviderKey.objects.filter(kid__in=kids).values(*KEY_FIELDS)}


def _when(bundle: dict | None) -> datetime | None:
    sig = (bundle or {}).get("signature")
    when = sig.get("when") if isinstance(sig, dict) else None
    try:
        return datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        return None


def _at(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")
