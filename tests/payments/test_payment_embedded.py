"""The whole payment run on whichever database the suite runs against: PostgreSQL in the first
pass, SQLite in ``make test``'s second pass (what ``make run`` uses by default)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from claims.models import Claim
from claims.states import ClaimStatus
from payments.models import PaymentRun
from review.models import Payout
from tests.payments.helpers import approved_claims

pytestmark = pytest.mark.django_db


def test_the_command_pays_approved_claims_inline(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    approved_claims(3)
    call_command("payment_run", "--inline", stdout=io.StringIO())
    run = PaymentRun.objects.get()
    assert (run.status, run.total, run.settled, run.chunks) == (PaymentRun.Status.SETTLED, 3, 3, 2)
    assert set(Claim.objects.values_list("status", flat=True)) == {ClaimStatus.PAID}
    assert not Payout.objects.filter(settled_at__isnull=True).exists()
