"""Requests racing with one Idempotency-Key on PostgreSQL: exactly one claim is stored, every
request with its body answers that claim, and one with another body is a 409 (the unique
constraint decides, there is no lookup to race past)."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from audit.models import AuditEntry
from claims.models import Claim, ClaimEvent, ClaimItem
from config.celery import app
from tests.claims import factories as f

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
RACERS = 12


@pytest.fixture
def throwaway_queue():
    queue = f"test-intake-race-{uuid.uuid4().hex[:8]}"
    before = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    yield queue
    app.conf.task_default_queue = before
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)


def _race(kit, bodies: list[bytes], key: str) -> list[tuple[int, dict]]:
    start = threading.Barrier(len(bodies))

    def post(body: bytes) -> tuple[int, dict]:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
            start.wait()
            response = client.generic(
                "POST",
                "/api/v1/claims",
                body,
                content_type="application/fhir+json",
                HTTP_IDEMPOTENCY_KEY=key,
            )
            return response.status_code, response.json()
        finally:
            connection.close()  # each thread had its own connection

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_one_key_raced_with_one_body_stores_one_claim_and_answers_it_to_all(throwaway_queue):
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    answers = _race(kit, [body] * RACERS, key="raced")
    assert {status for status, _ in answers} == {202}
    assert len({data["id"] for _, data in answers}) == 1
    assert Claim.objects.count() == ClaimEvent.objects.count() == 1
    assert ClaimItem.objects.count() == 2
    assert AuditEntry.objects.filter(action="claim.submit").count() == 1


def test_one_key_raced_with_two_bodies_stores_one_and_refuses_the_other(throwaway_queue):
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    first = f.signed_body(kit, f.claim_resource(anchored), anchored)
    second = f.signed_body(kit, f.claim_resource(anchored, unit_price="99.00"), anchored)
    answers = _race(kit, [first, second] * (RACERS // 2), key="raced")
    stored = Claim.objects.get()
    winner = first if bytes(stored.body) == first else second
    for body, (status, data) in zip([first, second] * (RACERS // 2), answers, strict=True):
        if body == winner:
            assert (status, data["id"]) == (202, str(stored.public_id))
        else:
            assert (status, data["code"]) == (409, "idempotency_conflict")
    assert ClaimEvent.objects.count() == 1
