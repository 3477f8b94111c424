"""50 concurrent submissions of one procedure: exactly one live claim, whatever the timing.

Each thread has its own database connection and goes through intake and verification as a
worker would; the partial unique index ``one_live_claim_per_anchor`` decides. Intake queues each
claim's task on commit: those go to a throwaway queue, deleted afterwards (the threads verify).
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from claims.models import BilledAnchor, ClaimCheck
from claims.states import ClaimStatus
from claims.verification import claim_verify
from config.celery import app
from tests.claims.factories import (
    anchor_procedure,
    claim_resource,
    make_provider,
    procedure,
    signed_body,
    submit,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
RACERS = 50


@pytest.fixture
def throwaway_queue():
    queue = f"test-race-{uuid.uuid4().hex[:8]}"
    before = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    yield queue
    app.conf.task_default_queue = before
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)


def test_fifty_concurrent_claims_for_one_procedure_leave_exactly_one_live(throwaway_queue):
    kit = make_provider()
    a = anchor_procedure(procedure())
    bodies = [
        signed_body(kit, claim_resource([a], unit_price=f"{100 + n}.00"), [a])
        for n in range(RACERS)
    ]
    start = threading.Barrier(RACERS)

    def race(body: bytes) -> int:
        try:
            start.wait()
            claim = submit(kit, body)
            return claim_verify(claim_id=claim.pk).pk
        finally:
            connection.close()  # each thread had its own connection

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        ids = list(pool.map(race, bodies))

    assert len(set(ids)) == RACERS
    live = BilledAnchor.objects.filter(live=True)
    assert live.count() == 1
    winner = live.get().claim
    assert winner.status == ClaimStatus.VERIFIED
    losers = ClaimCheck.objects.filter(claim_id__in=ids, name="double_billing", outcome="fail")
    assert losers.count() == RACERS - 1
    for check in losers:
        assert check.claim.status == ClaimStatus.REJECTED
        assert check.evidence["anchors"][0]["billed_by"] == str(winner.public_id)
