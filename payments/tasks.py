"""Celery entry points for payment runs: ids in, one service call each.

``acks_late`` and ``reject_on_worker_lost`` as in ``jobs.tasks``: a worker killed mid-chunk
leaves the message unacknowledged and the chunk is delivered again; its transaction was rolled
back, and a chunk already done is a no-op, so nothing is settled twice. ``payments_sweep_task``
(beat) re-queues collections and chunks whose message was lost altogether.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from payments import services
from payments.models import PaymentChunk, PaymentRun

log = logging.getLogger(__name__)
RETRY = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(bind=True, max_retries=20, **RETRY)
def payment_run_task(self, run_id: int) -> None:
    """Collect a run's payouts into chunks and queue one ``payment_chunk_task`` per chunk."""
    try:
        services.payment_run_collect(run_id)
    except PaymentRun.DoesNotExist:
        log.warning("payment run %s does not exist: nothing to collect", run_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc


@shared_task(bind=True, max_retries=20, **RETRY)
def payment_chunk_task(self, chunk_id: int) -> None:
    """Settle one chunk of payouts (a no-op for a chunk already done)."""
    try:
        services.payment_chunk_settle(chunk_id)
    except PaymentChunk.DoesNotExist:
        log.warning("payment chunk %s does not exist: nothing to do", chunk_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc


@shared_task(acks_late=True, ignore_result=True)
def payments_sweep_task(older_than_s: int | None = None) -> int:
    """Beat: re-queue collections and chunks nothing has touched for PAYMENTS_SWEEP_AFTER_S."""
    if older_than_s is None:
        older_than_s = getattr(settings, "PAYMENTS_SWEEP_AFTER_S", 900)
    runs, chunks = services.payments_to_sweep(older_than_s=older_than_s)
    for run_id in runs:
        payment_run_task.delay(run_id)
    for chunk_id in chunks:
        payment_chunk_task.delay(chunk_id)
    if runs or chunks:
        log.info("re-queued %d payment run collections and %d chunks", len(runs), len(chunks))
    return len(runs) + len(chunks)
