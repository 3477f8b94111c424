"""A real Celery worker on Redis runs a payment run: collection and chunks in the worker,
progress in the database where the command's progress bar reads it; a chunk delivered again
settles nothing twice."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from claims.models import ClaimEvent
from claims.states import ClaimStatus
from payments.models import PaymentChunk, PaymentRun, PaymentRunTotal
from payments.tasks import payment_chunk_task, payment_run_task, payments_sweep_task
from review.models import Payout
from tests.payments.helpers import approved_by_the_worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def test_the_command_waits_for_a_run_the_worker_settles(celery_worker, settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    claims = approved_by_the_worker(5)
    out = io.StringIO()
    call_command("payment_run", "--wait", "--interval", "0.1", stdout=out)
    run = PaymentRun.objects.get()
    assert (run.status, run.chunks, run.total, run.settled) == (PaymentRun.Status.SETTLED, 3, 5, 5)
    text = out.getvalue()
    assert "\r[" in text and "5/5 100.0%" in text and f"payment run {run.pk} settled" in text
    assert PaymentRunTotal.objects.get(run=run).settled_amount == 525
    assert not Payout.objects.filter(settled_at__isnull=True).exists()

    # Delivered again (a worker died before acknowledging): nothing is settled twice.
    settled_at = list(Payout.objects.order_by("pk").values_list("settled_at", flat=True))
    for chunk_id in PaymentChunk.objects.filter(run=run).values_list("pk", flat=True):
        payment_chunk_task.apply(args=[chunk_id])
    payment_run_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert (run.settled, run.chunks, run.chunks_done, run.total) == (5, 3, 3, 5)
    assert list(Payout.objects.order_by("pk").values_list("settled_at", flat=True)) == settled_at
    paid = ClaimEvent.objects.filter(
        claim_id__in=[c.pk for c in claims], new_status=ClaimStatus.PAID
    )
    assert paid.count() == 5
    assert payments_sweep_task.apply(kwargs={"older_than_s": 0}).get() == 0  # nothing is lost
