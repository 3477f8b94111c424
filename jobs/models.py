"""Batch jobs: a job re-verifies a scope of claims, split into chunks of claim ids.

The database is the record of progress. A chunk moves to ``done`` once (compare-and-set), and the
job's counters grow by that chunk's counts in the same transaction, with ``F()``: a redelivered
chunk never counts twice. Each claim a job handled has one ``BatchResult`` row (unique per job and
claim), written in the transaction that re-verified the claim: a chunk re-run after a worker died
half way skips the claims it already did. docs/jobs.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BatchJob(models.Model):
    class Kind(models.TextChoices):
        VERIFY = "verify", "re-verify claims"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.VERIFY)
    scope = models.JSONField(
        help_text='{"all": true} | {"provider": id} | {"kid": "..."} | '
        '{"since": iso, "until": iso} | {"checkpoint": size}'
    )
    reason = models.CharField(max_length=300, blank=True, help_text="Why the job was started.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # Planning: chunks planned so far, and whether every claim of the scope is in a chunk.
    planned = models.BooleanField(default=False)
    chunks = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    # Claims: total is the sum of the planned chunks' sizes; the rest grow as chunks finish.
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0, help_text="verified or needs_review")
    failed = models.PositiveIntegerField(default=0, help_text="rejected")
    changed = models.PositiveIntegerField(default=0, help_text="verdict differs from before")
    waiting = models.PositiveIntegerField(default=0, help_text="waiting for a final checkpoint")
    skipped = models.PositiveIntegerField(default=0, help_text="in a state that is not re-verified")
    errors = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="job_status_created")]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.kind} {self.scope})"


class BatchChunk(models.Model):
    """Claim ids ``ids`` (ascending, at most JOBS_CHUNK_SIZE): ``first_id``..``last_id``."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunk_set")
    number = models.PositiveIntegerField()
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    ids = models.JSONField(help_text="The claim ids of this chunk, as planned.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="one_chunk_per_number"),
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="chunk_status_updated")]

    def __str__(self) -> str:
        return f"job {self.job_id} chunk {self.number}"


class BatchResult(models.Model):
    """What a job found for one claim: the verdict before and after, and why it changed."""

    class Outcome(models.TextChoices):
        PASSED = "passed"
        FAILED = "failed"
        WAITING = "waiting"
        SKIPPED = "skipped"
        ERROR = "error"

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="results")
    chunk = models.ForeignKey(BatchChunk, on_delete=models.CASCADE, related_name="results")
    claim = models.ForeignKey("claims.Claim", on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    old_verdict = models.CharField(max_length=20, blank=True)
    new_verdict = models.CharField(max_length=20, blank=True)
    changed = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    run = models.PositiveIntegerField(null=True, blank=True, help_text="The new verification run.")
    at = models.DateTimeField()

    class Meta:
        ordering = ["job", "claim"]
        constraints = [
            models.UniqueConstraint(fields=["job", "claim"], name="one_result_per_job_and_claim"),
        ]
        indexes = [models.Index(fields=["job", "changed"], name="result_job_changed")]
