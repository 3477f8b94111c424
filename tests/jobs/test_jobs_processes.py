"""Jobs survive what happens to real processes: a Celery worker process killed with SIGKILL in
the middle of a chunk, the broker (a private redis-server) killed and started again empty, and
chunk tasks delivered twice to two workers at once. Each time the job finishes with every claim
re-verified once and counted once: one ``BatchResult`` per claim (unique per job and claim), one
new verification run per claim, counters equal to the number of claims."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db.models import Count

from claims.models import Claim, ClaimEvent
from claims.states import ClaimStatus
from jobs import services as jobs
from jobs.models import BatchChunk, BatchJob, BatchResult
from jobs.tasks import job_chunk_task, jobs_sweep_task
from ledger import services as ledger
from tests.claims.factories import anchor_procedure, claim_for, make_provider, procedure, verified

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
S = ClaimStatus
J = BatchJob.Status


def wait_for(predicate, what: str, workers, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{workers.logs()}")


def verified_claims(n: int) -> list[int]:
    """``n`` verified claims of a new provider (one Procedure each, one seal), committed."""
    kit = make_provider()
    anchored = [
        anchor_procedure(procedure(), kit.provider.member.name, seal=False) for _ in range(n)
    ]
    ledger.ledger_seal_and_cosign()
    claims = [verified(claim_for(kit, [a])[0]) for a in anchored]
    assert {c.status for c in claims} == {S.VERIFIED}
    return [c.pk for c in claims]


def job_status(job: BatchJob) -> str:
    return BatchJob.objects.values_list("status", flat=True).get(pk=job.pk)


def partly_done_chunks(job: BatchJob, size: int) -> list[int]:
    """Chunks under way: some of their claims have a result, not all (nor nearly all)."""
    return list(
        BatchChunk.objects.filter(job=job, status=BatchChunk.Status.PENDING)
        .annotate(n=Count("results"))
        .filter(n__gte=2, n__lte=size - 2)
        .values_list("pk", flat=True)
    )


def assert_each_claim_counted_once(job: BatchJob, ids: list[int]) -> None:
    job.refresh_from_db()
    n = len(ids)
    assert job.status == J.DONE and job.planned and job.chunks_done == job.chunks
    assert (job.total, job.done, job.passed) == (n, n, n)
    assert (job.failed, job.waiting, job.skipped, job.errors, job.changed) == (0, 0, 0, 0, 0)
    results = BatchResult.objects.filter(job=job)
    assert sorted(results.values_list("claim_id", flat=True)) == sorted(ids)  # none missing
    assert set(results.values_list("outcome", "run")) == {(BatchResult.Outcome.PASSED, 2)}
    assert set(BatchChunk.objects.filter(job=job).values_list("status", flat=True)) == {"done"}
    # one new verification run per claim: run 2, and one re-verification event for it
    claims = Claim.objects.filter(pk__in=ids)
    assert set(claims.values_list("status", "verification_runs")) == {(S.VERIFIED, 2)}
    started = ClaimEvent.objects.filter(
        claim_id__in=ids, reason__startswith=f"batch job {job.pk}: re-verification"
    )
    assert sorted(started.values_list("claim_id", flat=True)) == sorted(ids)


def test_a_worker_killed_mid_chunk_is_replaced_and_no_claim_is_skipped_or_counted_twice(
    workers, settings
):
    settings.JOBS_CHUNK_SIZE, settings.JOBS_VERIFY_BATCH = size, _ = 10, 2  # 5 commits a chunk
    ids = verified_claims(40)
    job = jobs.job_start({"all": True}, reason="SIGKILL test")
    first = workers.start()
    wait_for(lambda: partly_done_chunks(job, size), "a chunk under way", workers)
    first.kill()  # SIGKILL to the whole process group, in the middle of that chunk

    cut_short = partly_done_chunks(job, size)
    assert cut_short, "the worker was killed between chunks, not in one"
    assert job_status(job) == J.RUNNING
    workers.start()  # the message of the chunk cut short comes back to this one
    wait_for(lambda: job_status(job) == J.DONE, "the job done by the second worker", workers)

    assert_each_claim_counted_once(job, ids)
    assert all(c.attempts >= 2 for c in BatchChunk.objects.filter(pk__in=cut_short))


def test_a_pool_process_killed_mid_chunk_is_replaced_and_its_chunk_requeued_at_once(
    workers, settings
):
    """The OOM killer's way: the prefork child running the chunk dies, the worker lives on.
    ``reject_on_worker_lost`` puts the message back at once: with the production visibility
    timeout (an hour) the job still finishes now, on the same worker's new child."""
    settings.JOBS_CHUNK_SIZE, settings.JOBS_VERIFY_BATCH = size, _ = 10, 2
    ids = verified_claims(40)
    job = jobs.job_start({"all": True}, reason="pool process SIGKILL test")
    worker = workers.start(pool="prefork", visibility_timeout_s=3600)
    wait_for(lambda: partly_done_chunks(job, size), "a chunk under way", workers)
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)

    cut_short = partly_done_chunks(job, size)
    assert cut_short, "the pool process was killed between chunks, not in one"
    wait_for(lambda: job_status(job) == J.DONE, "the job done by the new pool process", workers)

    assert_each_claim_counted_once(job, ids)
    assert all(c.attempts >= 2 for c in BatchChunk.objects.filter(pk__in=cut_short))
    assert child not in worker.pool_children()


def test_a_broker_restart_loses_the_queue_and_the_sweeper_finishes_the_job(
    workers, broker, settings
):
    settings.JOBS_CHUNK_SIZE = 4
    ids = verified_claims(40)
    job = jobs.job_start({"all": True}, reason="broker restart test")
    workers.start()
    wait_for(
        lambda: BatchJob.objects.filter(pk=job.pk, planned=True, chunks_done__gte=2).exists(),
        "two chunks done",
        workers,
    )
    broker.kill()  # no RDB, no AOF: every queued chunk task is gone
    broker.start()  # same port: the worker reconnects by itself

    def stalled() -> bool:  # nothing written for 2 s: what the sweeper looks for
        job.refresh_from_db()
        return job.status == J.DONE or (time.time() - job.updated_at.timestamp()) > 2.0

    wait_for(stalled, "the job stalled", workers)
    assert job.status == J.RUNNING and job.chunks_done < job.chunks  # the queue was lost
    assert jobs_sweep_task(older_than_s=1) == job.chunks - job.chunks_done  # what beat runs
    wait_for(lambda: job_status(job) == J.DONE, "the job done after the sweep", workers)

    assert_each_claim_counted_once(job, ids)


def test_chunks_delivered_twice_to_two_workers_at_once_count_once(workers, settings):
    settings.JOBS_CHUNK_SIZE = 5
    ids = verified_claims(30)
    job = jobs.job_start({"all": True}, reason="resubmission test")

    def twice(chunk_id: int) -> None:  # each chunk queued twice, one message after the other
        job_chunk_task.delay(chunk_id)
        job_chunk_task.delay(chunk_id)

    jobs.job_plan(job.pk, dispatch=twice)
    workers.start()
    workers.start()  # two workers: the two deliveries of a chunk run side by side
    wait_for(lambda: job_status(job) == J.DONE, "the job done", workers)

    assert_each_claim_counted_once(job, ids)
