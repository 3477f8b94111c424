"""A real Celery worker on Redis runs whole jobs: planning, chunks in the worker, progress in the
database where the command's progress bar reads it."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import call_command

from claims.models import Claim
from claims.services import provider_key_revoke
from claims.states import ClaimStatus
from jobs.models import BatchJob
from jobs.tasks import job_chunk_task
from ledger import services as ledger
from tests.claims.factories import anchor_procedure, claim_for, make_provider, procedure

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
S = ClaimStatus


def _wait_for(predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("the worker did not get there in time")


def verified_by_the_worker(kit, n: int) -> list[Claim]:
    anchored = [anchor_procedure(procedure(), seal=False) for _ in range(n)]
    ledger.ledger_seal_and_cosign()
    claims = [claim_for(kit, [a])[0] for a in anchored]  # intake queues them on commit
    ids = [c.pk for c in claims]
    _wait_for(
        lambda: (
            set(Claim.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.VERIFIED}
        )
    )
    return list(Claim.objects.filter(pk__in=ids))


def test_the_command_waits_for_a_job_the_worker_runs(celery_worker, settings):
    settings.JOBS_CHUNK_SIZE = 4
    kit = make_provider()
    claims = verified_by_the_worker(kit, 10)
    out = io.StringIO()
    call_command("verify_claims", "--all", "--wait", "--interval", "0.1", stdout=out)
    job = BatchJob.objects.get()
    assert (job.status, job.chunks, job.total, job.done, job.passed, job.changed) == (
        BatchJob.Status.DONE, 3, 10, 10, 10, 0,
    )  # fmt: skip
    text = out.getvalue()
    assert "\r[" in text and "10/10 100.0%" in text and f"job {job.pk} done" in text
    runs = Claim.objects.filter(pk__in=[c.pk for c in claims]).values_list(
        "verification_runs", flat=True
    )
    assert set(runs) == {2}

    job_chunk_task.delay(job.chunk_set.first().pk)  # a resubmitted chunk
    time.sleep(1)
    job.refresh_from_db()
    assert (job.done, job.passed, job.chunks_done) == (10, 10, 3)
    assert set(Claim.objects.values_list("verification_runs", flat=True)) == {2}


def test_a_revoked_key_job_run_by_the_worker_counts_changes(celery_worker):
    kit = make_provider()
    claims = verified_by_the_worker(kit, 3)
    provider_key_revoke(
        key=kit.key, at=min(c.created_at for c in claims) - timedelta(seconds=1), reason="stolen"
    )
    from jobs.services import job_start_for_revoked_key

    job = BatchJob.objects.filter(scope={"kid": kit.kid}).first() or job_start_for_revoked_key(
        kid=kit.kid, reason="stolen"
    )  # the revocation starts it once claims/services.py has the hook
    _wait_for(lambda: BatchJob.objects.get(pk=job.pk).status == BatchJob.Status.DONE)
    job.refresh_from_db()
    assert (job.total, job.failed, job.changed) == (3, 3, 3)
    assert set(Claim.objects.values_list("status", "verdict")) == {(S.NEEDS_REVIEW, S.REJECTED)}


def test_revoking_a_key_starts_a_job_for_what_it_signed(celery_worker):
    kit = make_provider()
    claim_for(kit)
    provider_key_revoke(key=kit.key, reason="rotated")
    assert BatchJob.objects.filter(scope={"kid": kit.kid}).exists()
