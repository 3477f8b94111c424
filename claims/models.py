"""Providers, their signing keys, claims and everything recorded about them.

Rules a database can enforce live here as constraints: one claim per (provider, Idempotency-Key),
one live claim per billed anchor (a partial unique index), one result per check per run.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from claims.states import ClaimStatus
from ledger.models import Member


class Provider(models.Model):
    """A hospital, practice or lab. It anchors procedures as a consortium member."""

    class Kind(models.TextChoices):
        HOSPITAL = "hospital"
        PRACTICE = "practice"
        LAB = "lab"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.HOSPITAL)
    member = models.OneToOneField(Member, on_delete=models.PROTECT, related_name="provider")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProviderUser(models.Model):
    """Binds an API user to exactly one provider: it sees and touches that provider's claims."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_link"
    )
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="users")

    def __str__(self) -> str:
        return f"{self.user} → {self.provider}"


class ProviderKey(models.Model):
    """An Ed25519 public key (JWK) a provider signs claims with.

    A signature counts if it was made inside [not_before, not_after) and before revoked_at.
    Rotation adds a key; old claims stay verifiable under the old one.
    """

    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="keys")
    kid = models.CharField(max_length=100, unique=True)
    public_jwk = models.JSONField()
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "-not_before"]
        constraints = [
            models.CheckConstraint(
                condition=Q(not_after__isnull=True) | Q(not_after__gt=models.F("not_before")),
                name="key_window_is_not_empty",
            ),
        ]

    def __str__(self) -> str:
        return self.kid


class Claim(models.Model):
    """A submitted claim Bundle, exactly as received, and where it stands."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # db_index off: the queue indexes and one_claim_per_idempotency_key lead with provider
    provider = models.ForeignKey(
        Provider, on_delete=models.PROTECT, related_name="claims", db_index=False
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    idempotency_key = models.CharField(max_length=200)
    provider_reference = models.CharField(
        max_length=100,
        blank=True,
        help_text="the provider's own id of the claim (Claim.identifier)",
    )
    body_sha256 = models.BinaryField(max_length=32)
    body = models.BinaryField(help_text="The request body, byte for byte.")
    signed_payload = models.BinaryField(help_text="RFC 8785 canonical Bundle without signature.")
    kid = models.CharField(max_length=100)
    use = models.CharField(max_length=20)
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    currency = models.CharField(max_length=3, blank=True)
    related = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="corrections"
    )
    relationship = models.CharField(max_length=20, blank=True, help_text="replaces or voids")
    status = models.CharField(
        max_length=20, choices=ClaimStatus.choices, default=ClaimStatus.RECEIVED
    )
    verdict = models.CharField(max_length=20, blank=True)
    verification_runs = models.PositiveIntegerField(default=0)
    fhir_rules = models.PositiveSmallIntegerField(
        default=0,
        help_text="The FHIR validation rules (fhir_validation.RULES_VERSION) intake checked the "
        "Bundle under; 0: unknown. The first verification run trusts the same rules.",
    )
    waiting_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When this verification run started waiting for a final checkpoint.",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "idempotency_key"], name="one_claim_per_idempotency_key"
            ),
        ]
        indexes = [
            # the verification sweeper and the queue read claims by status, newest first
            models.Index(fields=["status", "-created_at"], name="claim_status_created"),
            # the adjusters' queue walks these from a keyset boundary (review/queue.py)
            models.Index(fields=["created_at", "id"], name="claim_queue_created"),
            # total and verdict ride along (last, not INCLUDE: SQLite has no INCLUDE) so that capped
            # counts per status stay index-only
            models.Index(
                fields=["status", "created_at", "id", "total", "verdict"],
                name="claim_queue_status",
            ),
            models.Index(fields=["provider", "created_at", "id"], name="claim_queue_provider"),
            models.Index(
                fields=["provider", "status", "created_at", "id"], name="claim_queue_prov_status"
            ),
            models.Index(fields=["total", "id"], name="claim_queue_total"),
            models.Index(
                fields=["provider_reference"],
                opclasses=["varchar_pattern_ops"],
                name="claim_queue_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"claim {self.public_id}"


class ClaimItem(models.Model):
    """One billed line, as submitted and as adjudicated."""

    class Adjudication(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        ADJUSTED = "adjusted"
        DENIED = "denied"

    # db_index off: one_item_per_sequence (claim, sequence) serves every lookup by claim
    claim = models.ForeignKey(Claim, on_delete=models.CASCADE, related_name="items", db_index=False)
    sequence = models.PositiveIntegerField()
    product_code = models.CharField(max_length=100, blank=True)
    procedure_url = models.CharField(max_length=300, blank=True)
    submitted = models.DecimalField(max_digits=14, decimal_places=2)
    eligible = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    benefit = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    adjudication = models.CharField(
        max_length=10, choices=Adjudication.choices, default=Adjudication.PENDING
    )
    reason_code = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["claim", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["claim", "sequence"], name="one_item_per_sequence"),
        ]


class ClaimCheck(models.Model):
    """The outcome of one verification check in one run, with its evidence and a sentence."""

    class Outcome(models.TextChoices):
        PASS = "pass"  # noqa: S105 - an outcome, not a password
        FAIL = "fail"
        WARN = "warn"
        WAIT = "wait", "waiting (e.g. checkpoint not final yet)"

    # db_index off: one_result_per_check (claim, run, name) serves every lookup by claim
    claim = models.ForeignKey(
        Claim, on_delete=models.CASCADE, related_name="checks", db_index=False
    )
    run = models.PositiveIntegerField()
    name = models.CharField(max_length=80)
    outcome = models.CharField(max_length=4, choices=Outcome.choices)
    sentence = models.TextField()
    evidence = models.JSONField(default=dict)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["claim", "run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["claim", "run", "name"], name="one_result_per_check"),
        ]
        indexes = [
            # the queue's "check that failed" filter starts from the (few) failures
            models.Index(
                fields=["name", "claim", "run"],
                condition=Q(outcome="fail"),
                name="check_failed_by_name",
            ),
        ]


class BilledAnchor(models.Model):
    """A ledger leaf billed by a claim. At most one live claim bills any leaf: the partial
    unique index below says so, whatever the concurrency."""

    # db_index off: billed_once_per_claim (claim, commitment) serves every lookup by claim
    claim = models.ForeignKey(
        Claim, on_delete=models.CASCADE, related_name="billed_anchors", db_index=False
    )
    commitment = models.BinaryField(max_length=32)
    leaf_index = models.BigIntegerField()
    live = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["commitment"], condition=Q(live=True), name="one_live_claim_per_anchor"
            ),
            models.UniqueConstraint(fields=["claim", "commitment"], name="billed_once_per_claim"),
        ]


class FeeScheduleEntry(models.Model):
    """The most the insurer expects to be billed for one unit of a code (a business rule: a
    higher unit price flags the claim for review, it never rejects it)."""

    system = models.CharField(max_length=200)
    code = models.CharField(max_length=100)
    currency = models.CharField(max_length=3)
    max_unit_price = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["system", "code"]
        constraints = [
            models.UniqueConstraint(
                fields=["system", "code", "currency"], name="one_fee_per_code_and_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system}|{self.code} ≤ {self.max_unit_price} {self.currency}"


class ClaimEvent(models.Model):
    """The claim's history: who did what, when, why, and what the claim looked like then."""

    claim = models.ForeignKey(Claim, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    old_status = models.CharField(max_length=20, blank=True)
    new_status = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    snapshot = models.JSONField(default=dict)

    class Meta:
        ordering = ["claim", "at", "id"]
        # the dashboard reads a window of history by time
        indexes = [models.Index(fields=["at"], name="claimevent_at")]
