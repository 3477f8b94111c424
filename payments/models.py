"""Payment runs: approved claims' payouts paid together, at most one run per period.

* ``PaymentRun.period`` is unique: a second run for the same day is impossible, whatever the
  concurrency (the loser gets a ``Conflict``).
* ``PaymentRunItem.payout`` is one-to-one: a payout is in at most one run, ever.
* A run's payouts are collected in keyset chunks (``PaymentChunk``); a chunk is settled in one
  transaction that marks its payouts settled, moves their claims approved -> paid and adds its
  counts to the run and its per-currency totals with ``F()``. A chunk moves to ``done`` once
  (compare-and-set under a row lock), so a redelivered chunk never settles or counts twice.

docs/payments.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class PaymentRun(models.Model):
    """The run for ``period`` pays every unsettled payout approved up to the end of that UTC
    day that no earlier run took."""

    class Status(models.TextChoices):
        PLANNED = "planned"
        RUNNING = "running"
        SETTLED = "settled"
        FAILED = "failed"

    period = models.DateField(help_text="The UTC day the run pays up to (inclusive).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    reason = models.CharField(max_length=300, blank=True)
    # Collection: chunks collected so far, and whether every payout of the period is in one.
    collected = models.BooleanField(default=False)
    chunks = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0, help_text="payouts in the run")
    settled = models.PositiveIntegerField(default=0, help_text="payouts settled")
    errors = models.PositiveIntegerField(default=0, help_text="payouts that could not be settled")
    error = models.TextField(blank=True, help_text="why the run failed")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["period"], name="one_payment_run_per_period"),
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="payrun_status_updated")]

    def __str__(self) -> str:
        return f"payment run {self.pk} ({self.period})"


class PaymentRunTotal(models.Model):
    """Counts and amounts of one run in one currency: collected, and settled so far."""

    run = models.ForeignKey(PaymentRun, on_delete=models.CASCADE, related_name="totals")
    currency = models.CharField(max_length=3)
    payouts = models.PositiveIntegerField(default=0)
    amount = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    settled_payouts = models.PositiveIntegerField(default=0)
    settled_amount = models.DecimalField(max_digits=16, decimal_places=2, default=0)

    class Meta:
        ordering = ["run", "currency"]
        constraints = [
            models.UniqueConstraint(fields=["run", "currency"], name="one_total_per_run_currency"),
        ]


class PaymentChunk(models.Model):
    """Payouts ``first_id``..``last_id`` of a run (PAYMENTS_CHUNK_SIZE at most), settled as one."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    run = models.ForeignKey(PaymentRun, on_delete=models.CASCADE, related_name="chunk_set")
    number = models.PositiveIntegerField()
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    size = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="one_payment_chunk_per_number"),
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="paychunk_status_updated")]

    def __str__(self) -> str:
        return f"payment run {self.run_id} chunk {self.number}"


class PaymentRunItem(models.Model):
    """One payout in one run; amount and currency are copied for the remittance record.

    A payout is in at most one run, ever, unless that run could not pay it and the payout was
    then voided (its approval taken away: ``released_at``): the partial unique index
    ``one_open_run_item_per_payout`` allows one item not released per payout, so a payout
    approved again later can be paid by a later run, once."""

    run = models.ForeignKey(PaymentRun, on_delete=models.CASCADE, related_name="items")
    chunk = models.ForeignKey(PaymentChunk, on_delete=models.CASCADE, related_name="items")
    payout = models.ForeignKey(
        "review.Payout", on_delete=models.PROTECT, related_name="payment_run_items"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    settled_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="why this payout could not be settled")
    released_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="the payout was voided after this run: a later run may pay it",
    )

    class Meta:
        ordering = ["run", "payout"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="payrun_item_not_negative"),
            models.UniqueConstraint(
                fields=["payout"],
                condition=Q(released_at__isnull=True),
                name="one_open_run_item_per_payout",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id}: payout {self.payout_id}"
