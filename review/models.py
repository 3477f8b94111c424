"""What adjusters add to a claim: who holds it, approvals (four-eyes), requests for
information, and the one payout an approval creates. Claim status itself lives in
``claims.states``; every row here is written by ``review.services``."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from claims.models import Claim, Provider


class Hold(models.Model):
    """A claim under review by one adjuster: others see who holds it and cannot decide on it."""

    claim = models.OneToOneField(Claim, on_delete=models.CASCADE, related_name="hold")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    since = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.claim} held by {self.user}"


class Approval(models.Model):
    """One adjuster's approval of one review round of a claim. Four-eyes claims need two rows
    from two different users in the same round; the constraint makes a second approval by the
    same person impossible, whatever the concurrency."""

    claim = models.ForeignKey(Claim, on_delete=models.CASCADE, related_name="approvals")
    round = models.PositiveIntegerField(help_text="the claim's verification run when approved")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    senior = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["claim", "at"]
        constraints = [
            models.UniqueConstraint(
                fields=["claim", "round", "user"], name="one_approval_per_adjuster_per_round"
            ),
        ]


class InfoRequest(models.Model):
    """An adjuster's question to the provider; the claim waits in ``info_requested`` until the
    provider answers through the API with a FHIR DocumentReference or Binary."""

    claim = models.ForeignKey(Claim, on_delete=models.CASCADE, related_name="info_requests")
    reason_code = models.CharField(max_length=30)
    question = models.TextField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    answer_text = models.TextField(blank=True)
    attachment = models.JSONField(null=True, blank=True, help_text="the FHIR resource received")

    class Meta:
        ordering = ["claim", "requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["claim"],
                condition=Q(answered_at__isnull=True),
                name="one_open_info_request_per_claim",
            ),
        ]


class Payout(models.Model):
    """The money an approval commits to pay. One per claim (the OneToOne is the constraint);
    a payment run settles it and moves the claim to ``paid``.

    A re-verification that takes the approval away (a batch job after a backdated key
    revocation) voids it (``voided_at``, ``void_reason``): no payment run pays a voided payout.
    A later approval of the claim reissues the same row with the new amount (``created_at`` is
    when the approval that stands was given)."""

    claim = models.OneToOneField(Claim, on_delete=models.PROTECT, related_name="payout")
    payee = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="payouts")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    settled_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="payout_not_negative"),
        ]
        indexes = [
            models.Index(fields=["settled_at", "created_at"], name="payout_unsettled"),
            models.Index(fields=["created_at"], name="payout_created"),  # payouts per day
        ]

    def __str__(self) -> str:
        return f"{self.reference}: {self.amount} {self.currency} to {self.payee}"
