"""A batch job voids a payout while a payment run is collecting it (two real transactions on
PostgreSQL): the run never pays the voided amount, and the payout, approved again with another
amount, is paid once, at the new amount, by a later run."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from claims.models import Claim
from claims.states import ClaimStatus as S
from claims.states import claim_transition
from payments import services as payments
from payments.models import PaymentRun, PaymentRunItem
from review import services as review
from review.models import Payout
from tests.payments.helpers import approved_claims

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _day(n: int):
    return timezone.now().astimezone(UTC).date() + timedelta(days=n)


def _void_while_collecting(claim: Claim, run: PaymentRun) -> int | None:
    """The job voids the payout and holds its transaction open while the run collects."""
    voided, errors, chunk = threading.Event(), [], []

    def job():
        try:
            with transaction.atomic():
                c = Claim.objects.select_for_update().get(pk=claim.pk)
                claim_transition(claim=c, to=S.VERIFYING, reason="batch job")
                claim_transition(claim=c, to=S.NEEDS_REVIEW, reason="batch job: verdict changed")
                review.payout_void(claim=c, reason="the signing key was revoked")
                voided.set()
                time.sleep(1.0)  # the rest of the job's batch, still uncommitted
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def collect():
        try:
            voided.wait(10)
            chunk.append(payments._collect_one(run.pk))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=job), threading.Thread(target=collect)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return chunk[0]


def _approve_again(claim: Claim, payout: Payout, amount: str) -> None:
    with transaction.atomic():
        c = Claim.objects.select_for_update().get(pk=claim.pk)
        claim_transition(claim=c, to=S.APPROVED, reason="approved again")
        review._payout_for(c, Decimal(amount), payout.created_by)


@pytest.mark.parametrize("settled_before_reapproval", [True, False])
def test_a_payout_voided_during_collection_is_paid_once_at_its_new_amount(
    settled_before_reapproval,
):
    [claim] = approved_claims(1)  # 105.00
    yesterday = datetime.combine(_day(-1), dtime(12), tzinfo=UTC)
    Payout.objects.filter(claim=claim).update(created_at=yesterday)
    payout = Payout.objects.get(claim=claim)
    run = PaymentRun.objects.create(period=_day(-1), status=PaymentRun.Status.RUNNING)

    chunk = _void_while_collecting(claim, run)
    # the collector waited for the job and saw the void: nothing of it entered the run
    assert not PaymentRunItem.objects.filter(payout=payout, released_at__isnull=True).exists()
    if chunk is not None:
        if settled_before_reapproval:
            payments.payment_chunk_settle(chunk)
            _approve_again(claim, payout, "80.00")
        else:
            _approve_again(claim, payout, "80.00")
            payments.payment_chunk_settle(chunk)
    else:
        _approve_again(claim, payout, "80.00")
    payout.refresh_from_db()
    assert payout.settled_at is None and payout.amount == Decimal("80.00")
    assert Claim.objects.get(pk=claim.pk).status == S.APPROVED

    later = payments.payment_run_start(_day(0))
    payments.payment_run_collect(later.pk, dispatch=payments.payment_chunk_settle)
    paid = PaymentRunItem.objects.filter(payout=payout, settled_at__isnull=False)
    assert list(paid.values_list("run_id", "amount")) == [(later.pk, Decimal("80.00"))]
    assert Claim.objects.get(pk=claim.pk).status == S.PAID


def test_a_run_that_took_a_payout_before_its_void_pays_nothing_of_it():
    """The run took the payout first (committed); the void releases its item; approved again at
    another amount, the old run still refuses it and a later run pays the new amount."""
    [claim] = approved_claims(1)
    yesterday = datetime.combine(_day(-1), dtime(12), tzinfo=UTC)
    Payout.objects.filter(claim=claim).update(created_at=yesterday)
    payout = Payout.objects.get(claim=claim)
    run = PaymentRun.objects.create(period=_day(-1), status=PaymentRun.Status.RUNNING)
    chunk = payments._collect_one(run.pk)
    with transaction.atomic():
        c = Claim.objects.select_for_update().get(pk=claim.pk)
        claim_transition(claim=c, to=S.VERIFYING, reason="batch job")
        claim_transition(claim=c, to=S.NEEDS_REVIEW, reason="batch job: verdict changed")
        review.payout_void(claim=c, reason="the signing key was revoked")
    _approve_again(claim, payout, "80.00")

    payments.payment_chunk_settle(chunk)
    item = PaymentRunItem.objects.get(run=run, payout=payout)
    assert item.settled_at is None and item.released_at is not None
    assert "voided" in item.error

    later = payments.payment_run_start(_day(0))
    payments.payment_run_collect(later.pk, dispatch=payments.payment_chunk_settle)
    payout.refresh_from_db()
    assert payout.settled_at is not None
    paid = PaymentRunItem.objects.filter(payout=payout, settled_at__isnull=False)
    assert list(paid.values_list("run_id", "amount")) == [(later.pk, Decimal("80.00"))]
