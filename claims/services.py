"""Every write on the claims side: provider keys, and claim intake.

Intake does only the cheap checks (size, JSON, FHIR shape, known provider and key, idempotency);
the Celery task does the real verification. The claim row is committed before the task is queued.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import ENTRY_FIELDS, audit_record, audit_values
from claims import disclosure, fhir_validation, intake_write, jws, money, selectors
from claims.auth import Guard
from claims.models import Claim, ClaimEvent, ClaimItem, Provider, ProviderKey
from claims.states import ClaimStatus
from config.errors import Conflict, DomainError, TooLarge, Unprocessable

log = logging.getLogger(__name__)


class FhirRefusal(DomainError):
    """422 whose body is a FHIR OperationOutcome naming the bad elements."""

    status_code = 422
    code = "invalid_fhir"

    def __init__(self, outcome: dict):
        first = next(iter(outcome.get("issue", [])), {})
        super().__init__(first.get("diagnostics", "the Bundle is not valid FHIR R4"))
        self.outcome = outcome


class BadJson(DomainError):
    status_code = 400
    code = "invalid_json"


# --- provider keys -----------------------------------------------------------------------------


def provider_key_register(
    *,
    provider: Provider,
    public_jwk: dict,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    actor=None,
) -> tuple[ProviderKey, bool]:
    """Register a provider's Ed25519 public JWK; its kid is the RFC 7638 thumbprint unless the
    JWK names one. Registering the same key again answers the existing row (created False)."""
    try:
        key = jws.public_jwk_parse(public_jwk)
    except jws.JwsError as exc:
        raise Unprocessable(str(exc), code="bad_jwk") from exc
    kid = public_jwk.get("kid") or jws.thumbprint(public_jwk)
    clean = {"kty": "OKP", "crv": "Ed25519", "x": public_jwk["x"], "kid": kid}
    existing = ProviderKey.objects.filter(kid=kid).first()
    if existing is not None:
        if existing.provider_id != provider.pk or existing.public_jwk.get("x") != clean["x"]:
            raise Conflict(f"the key id {kid!r} is taken", code="kid_taken")
        return existing, False
    del key
    not_before = not_before or timezone.now()
    if not_after is not None and not_after <= not_before:
        raise Unprocessable("not_after must be later than not_before", code="bad_window")
    try:
        with transaction.atomic():
            key = ProviderKey.objects.create(
                provider=provider,
                kid=kid,
                public_jwk=clean,
                not_before=not_before,
                not_after=not_after,
            )
            audit_record(
                actor=actor,
                action="key.register",
                target=f"key:{kid}",
                data={"provider": provider.name, "not_before": not_before.isoformat()},
            )
        return key, True
    except IntegrityError as exc:
        raise Conflict(f"the key id {kid!r} is taken", code="kid_taken") from exc


def provider_key_revoke(
    *, key: ProviderKey, at: datetime | None = None, reason: str, actor=None
) -> ProviderKey:
    """Revoke a key from ``at`` on: signatures made before stay valid, later ones do not."""
    if not reason.strip():
        raise Unprocessable("a revocation needs a reason", code="reason_required")
    if key.revoked_at is not None:
        raise Conflict(f"key {key.kid} was already revoked at {key.revoked_at}", code="revoked")
    key.revoked_at = at or timezone.now()
    key.revocation_reason = reason.strip()
    with transaction.atomic():
        key.save(update_fields=["revoked_at", "revocation_reason"])
        audit_record(
            actor=actor,
            action="key.revoke",
            target=f"key:{key.kid}",
            why=key.revocation_reason,
            data={"provider": key.provider.name, "revoked_at": key.revoked_at.isoformat()},
        )
    transaction.on_commit(lambda: _reverify_signed_by(key))
    return key


def _reverify_signed_by(key: ProviderKey) -> None:
    """Once the revocation is committed: a batch job re-verifies every claim the key signed."""
    from jobs.services import job_start_for_revoked_key

    job_start_for_revoked_key(kid=key.kid, reason=key.revocation_reason)


# --- intake --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """A claim just stored, as its rows were written (``intake_write.fill``: field values by
    attname, the claim's and the event's ``id`` set): what the 202 answer shows, with no model
    instance built."""

    claim: intake_write.Row
    items: list[intake_write.Row]
    event: intake_write.Row
    actor_name: str | None  # the submitting user's username, None for none

    def as_claim(self) -> Claim:
        """The claim as a model instance, its items and event as ``prefetch_related`` reads
        them."""
        claim = Claim(**self.claim)
        claim._state.adding, claim._state.db = False, connection.alias
        items = [ClaimItem(**{**item, "claim_id": claim.pk}) for item in self.items]
        event = ClaimEvent(**{**self.event, "claim_id": claim.pk})
        event._state.adding, event._state.db = False, connection.alias
        for row in (*items, event):
            row.claim = claim
        claim._prefetched_objects_cache = {"items": items, "events": [event]}
        return claim


class Submission:
    """What a submission answered: the claim, new (``created``, with its ``received`` rows) or
    the earlier claim of the same Idempotency-Key."""

    __slots__ = ("_claim", "created", "received")

    def __init__(
        self, claim: Claim | None = None, *, created: bool, received: Received | None = None
    ) -> None:
        self._claim, self.created, self.received = claim, created, received

    @property
    def claim(self) -> Claim:
        if self._claim is None and self.received is not None:
            self._claim = self.received.as_claim()
        return self._claim


@dataclass(frozen=True, slots=True)
class _Actor:
    """The submitting user as ``audit_values`` reads an actor (no user instance needed)."""

    pk: int
    username: str

    def get_username(self) -> str:
        return self.username


def claim_submit(
    *, provider: Provider, user, body: bytes, idempotency_key: str, guard: Guard | None = None
) -> Submission:
    """Record a signed claim Bundle and queue its verification; the same key and body again
    answers the first claim, the same key with another body is a conflict.

    The Idempotency-Key is not looked up first: the claim's INSERT meets the unique constraint
    (provider, key) and, when it was taken, the earlier claim is read then. A refused body is
    checked against the key too, so a reused key answers as before validation would have.

    ``guard``: the caller's token was remembered, not read (``claims.auth``): the claim is stored
    only if the token, its user and provider link still hold when it is written. Any other answer
    (a refusal, an earlier claim) waits for the caller's ``auth.confirm``.
    """
    key = _key(body, idempotency_key)
    body_sha256 = hashlib.sha256(body).digest()
    try:
        accepted = _accepted(provider.pk, provider.name, body)
    except DomainError:
        # A key used before answers its first claim (or 409) whatever this body is.
        if (earlier := _same_key(provider, key, body_sha256)) is not None:
            return Submission(earlier, created=False)
        raise
    actor = None if user is None else _Actor(user.pk, user.get_username())
    received = _store(provider, actor, key, body, body_sha256, accepted, guard)
    if received is None:
        # The key was taken: by an earlier request, or by one that raced this one and committed.
        if (earlier := _same_key(provider, key, body_sha256)) is not None:
            return Submission(earlier, created=False)
        raise Conflict("this Idempotency-Key is in use; try again", code="idempotency_conflict")
    return Submission(created=True, received=received)


def claim_receive(*, guard: Guard, body: bytes, idempotency_key: str) -> Received | None:
    """:func:`claim_submit` for a caller whose token was remembered (``guard``), when the answer
    is a new claim; None when it would be anything else (a refusal, a taken key, a guard that no
    longer holds, a value the database cannot hold). Nothing is written then, and the caller
    answers through :func:`claim_submit`, which says why (``claims.api.IntakeMiddleware``)."""
    try:
        key = _key(body, idempotency_key)
        accepted = _accepted(guard.provider_id, guard.provider_name, body)
        provider = _Provider(guard.provider_id, guard.provider_name)
        actor = _Actor(guard.user_id, guard.username)
        body_sha256 = hashlib.sha256(body).digest()
        return _store(provider, actor, key, body, body_sha256, accepted, guard)
    except DomainError:
        return None


@dataclass(frozen=True, slots=True)
class _Provider:
    pk: int
    name: str


def _key(body: bytes, idempotency_key: str) -> str:
    """The Idempotency-Key, once the body's size and the key are acceptable."""
    if len(body) > settings.CLAIMS_MAX_BYTES:
        raise TooLarge(f"a claim is at most {settings.CLAIMS_MAX_BYTES} bytes", code="too_large")
    key = idempotency_key.strip()
    if not key or len(key) > 200:
        raise Unprocessable(
            "send an Idempotency-Key header (1 to 200 characters)", code="idempotency_key"
        )
    return key


def _store(
    provider, actor: _Actor | None, key: str, body: bytes, body_sha256: bytes, a, guard
) -> Received | None:
    """Write the claim, its items, event and audit entry (one statement on PostgreSQL) and, once
    committed, request its verification; None when nothing was written (the key was taken, or
    the guard no longer holds)."""
    validated = a.validated
    total = validated.total
    now = timezone.now()
    claim = intake_write.fill(
        Claim,
        {
            "provider_id": provider.pk,
            "submitted_by_id": None if actor is None else actor.pk,
            "idempotency_key": key,
            "provider_reference": validated.reference,
            "body_sha256": body_sha256,
            "body": body,
            "signed_payload": a.signed_payload,
            "kid": a.kid,
            "use": validated.use,
            "fhir_rules": fhir_validation.RULES_VERSION,
            "total": total.value if total else None,
            "currency": total.currency if total else _currency(validated.items),
            "created_at": now,
            "updated_at": now,
        },
    )
    items = [
        intake_write.fill(
            ClaimItem,
            {
                "sequence": item.sequence,
                "product_code": item.code or "",
                "submitted": item.net.value if item.net else Decimal("0.00"),
            },
        )
        for item in sorted(validated.items, key=lambda item: item.sequence)
    ]
    total_text = str(total)
    event = intake_write.fill(
        ClaimEvent,
        {
            "at": now,
            "actor_id": None if actor is None else actor.pk,
            "new_status": ClaimStatus.RECEIVED,
            "reason": "submitted",
            "snapshot": {"idempotency_key": key, "kid": a.kid, "total": total_text},
        },
    )
    entry = audit_values(
        actor=actor,
        action="claim.submit",
        target=f"claim:{claim['public_id']}",
        data={"provider": provider.name, "kid": a.kid, "total": total_text},
        at=now,
    )
    entry = intake_write.fill(AuditEntry, dict(zip(ENTRY_FIELDS, entry, strict=True)))
    ids = _write(claim, items, event, entry, guard)
    if ids is None:
        return None
    claim["id"], event["id"] = ids
    claim_id = ids[0]
    # After the claim's commit (at once in autocommit mode, else when the outer transaction
    # commits): nothing is queued for a claim that was not stored.
    transaction.on_commit(lambda: _enqueue(claim_id))
    return Received(claim, items, event, None if actor is None else actor.username)


def _write(claim, items, event, entry, guard: Guard | None) -> tuple[int, int] | None:
    """``intake_write.write``; a value the database cannot hold (a code longer than its column,
    an amount beyond it, a NUL character) is the provider's 422, never a 500. Inside a caller's
    transaction a savepoint keeps that transaction usable; in autocommit the one statement
    fails alone."""
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return intake_write.write(claim, items, event, entry, guard)
        return intake_write.write(claim, items, event, entry, guard)
    except DataError as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unprocessable(
            f"a value in this claim cannot be stored: {problem}", code="value_out_of_range"
        ) from exc
    except IntegrityError as exc:
        if not _foreign_key_gone(exc):
            raise
        # The user (or provider) the claim names was deleted while it was written: the
        # statement saw it, its foreign keys failed at commit, nothing is stored. As for any
        # account that changed mid-request: send it again (the lean path hands over to the
        # full stack, whose authentication then answers 401).
        raise Conflict(
            "this account changed while the claim was sent: send it again",
            code="account_changed",
        ) from exc


def _foreign_key_gone(exc: IntegrityError) -> bool:
    """A foreign key violation (PostgreSQL's 23503, SQLite's message), not a unique one."""
    if getattr(exc.__cause__, "sqlstate", None) == "23503":
        return True
    return "FOREIGN KEY constraint failed" in str(exc)


@dataclass(frozen=True)
class _Accepted:
    """A body that passed intake's checks, with what the claim row needs of it."""

    validated: fhir_validation.ValidatedBundle
    signed_payload: bytes
    kid: str


def _accepted(provider_id: int, provider_name: str, body: bytes) -> _Accepted:
    """The cheap checks: JSON, the signature's format, FHIR shape, a key of this provider."""
    try:
        bundle, signed_payload = disclosure.canonical_payload(body)
        exact = money.loads(body)  # amounts as exact Decimals, as sent
    except disclosure.NotJson as exc:
        raise BadJson(str(exc)) from exc
    except (disclosure.DisclosureError, ValueError) as exc:
        raise Unprocessable(str(exc), code="bad_bundle") from exc
    try:
        detached = jws.parse_detached(disclosure.signature_jws(bundle))
        disclosure.disclosed_procedures(bundle)
    except (jws.JwsError, disclosure.DisclosureError) as exc:
        raise Unprocessable(str(exc), code="bad_signature_format") from exc
    try:
        validated = fhir_validation.validate_bundle(exact)
    except fhir_validation.FhirInvalid as exc:
        raise FhirRefusal(exc.outcome) from exc
    _unique_sequences(validated)
    if selectors.key_owner(detached.kid) != provider_id:
        raise Unprocessable(
            f"{provider_name} has no signing key {detached.kid!r}", code="unknown_key"
        )
    return _Accepted(validated, signed_payload, detached.kid)


def _unique_sequences(validated: fhir_validation.ValidatedBundle) -> None:
    """Each ``item.sequence`` once: it names the item (a ClaimResponse adjudicates it by that
    number, the database holds one row per claim and sequence). A repeat is the provider's FHIR
    422 here, not a 500 from the items' unique constraint after the claim's INSERT."""
    seen: dict[int, int] = {}
    issues = []
    for item in validated.items:
        if item.sequence in seen:
            where = f"{validated.claim_expression}.item[{item.index}].sequence"
            issues.append(
                {
                    "severity": "error",
                    "code": "duplicate",
                    "diagnostics": f"{where}: {item.sequence} repeats item[{seen[item.sequence]}]",
                    "expression": [where],
                }
            )
        seen.setdefault(item.sequence, item.index)
    if issues:
        raise FhirRefusal(fhir_validation.operation_outcome(issues))


def _currency(items) -> str:
    return next((item.net.currency for item in items if item.net), "")


def _same_key(provider: Provider, key: str, body_sha256: bytes) -> Claim | None:
    earlier = Claim.objects.filter(provider=provider, idempotency_key=key).first()
    if earlier is None:
        return None
    if bytes(earlier.body_sha256) != body_sha256:
        raise Conflict(
            "this Idempotency-Key was used for another body", code="idempotency_conflict"
        )
    return earlier


def _enqueue(claim_id: int) -> None:
    """Queue verification (a coalesced drain on Redis: claims/drain.py). The claim is already
    committed: if the broker is unreachable now, the sweeper (claims_sweep_task) queues it later,
    and the provider still gets its 202."""
    from claims.drain import verification_requested

    verification_requested(claim_id)
