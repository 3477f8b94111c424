"""Celery entry points for batch jobs: ids in, one service call each.

``acks_late`` and ``reject_on_worker_lost``: a worker killed mid-chunk leaves the message
unacknowledged, so the chunk is delivered again and re-run (a prefork child: at once; a whole
worker: once the broker's visibility timeout has passed); the services make that safe (a claim
is re-verified once per job, a chunk is counted once). ``jobs_sweep_task`` (beat) re-queues
planning and chunks whose message was lost altogether (a broker restarted empty), once the job
has not moved for ``JOBS_SWEEP_AFTER_S``. tests/jobs/test_jobs_processes.py does each of these
to real worker processes.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from jobs import services
from jobs.models import BatchChunk, BatchJob

log = logging.getLogger(__name__)
RETRY = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(bind=True, max_retries=20, **RETRY)
def job_run_task(self, job_id: int) -> None:
    """Plan a job: split its scope into chunks and queue one ``job_chunk_task`` per chunk."""
    try:
        services.job_plan(job_id)
    except BatchJob.DoesNotExist:
        log.warning("job %s does not exist: nothing to plan", job_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc


@shared_task(bind=True, max_retries=20, **RETRY)
def job_chunk_task(self, chunk_id: int) -> None:
    """Re-verify one chunk of claims (a no-op for a chunk already done)."""
    try:
        services.chunk_process(chunk_id)
    except BatchChunk.DoesNotExist:
        log.warning("chunk %s does not exist: nothing to do", chunk_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc


@shared_task(ignore_result=True)
def jobs_nightly_task() -> int | None:
    """Beat: re-verify every claim (skipped while the last nightly job still runs)."""
    job = services.job_start_nightly()
    return job.pk if job else None


@shared_task(acks_late=True, ignore_result=True)
def jobs_sweep_task(older_than_s: int | None = None) -> int:
    """Beat: re-queue planning and chunks nothing has touched for JOBS_SWEEP_AFTER_S."""
    if older_than_s is None:
        older_than_s = getattr(settings, "JOBS_SWEEP_AFTER_S", 900)
    plans, chunks = services.jobs_to_sweep(older_than_s=older_than_s)
    for job_id in plans:
        job_run_task.delay(job_id)
    for chunk_id in chunks:
        job_chunk_task.delay(chunk_id)
    if plans or chunks:
        log.info("re-queued %d job plans and %d chunks", len(plans), len(chunks))
    return len(plans) + len(chunks)
