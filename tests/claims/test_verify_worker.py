"""A real Celery worker on Redis verifies what intake queued on commit, and retries a claim whose
checkpoint is not final yet until it is."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from claims.models import Claim, ClaimCheck
from claims.states import ClaimStatus
from claims.tasks import claims_sweep_task
from config.celery import app
from ledger import services
from tests.claims.factories import (
    anchor_procedure,
    claim_for,
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
S = ClaimStatus


@pytest.fixture
def quick_retries(settings):
    settings.CLAIMS_VERIFY_BACKOFF_BASE_S = 0.2
    settings.CLAIMS_VERIFY_BACKOFF_MAX_S = 0.5


def _wait_for(predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("the worker did not get there in time")


def _status(claim: Claim) -> str:
    return Claim.objects.values_list("status", flat=True).get(pk=claim.pk)


def test_the_worker_verifies_a_submitted_claim(celery_worker):
    kit = make_provider()
    claim, _ = claim_for(kit)  # committed, then queued
    _wait_for(lambda: _status(claim) == S.VERIFIED)
    names = set(ClaimCheck.objects.filter(claim=claim).values_list("name", flat=True))
    assert {"signature", "fhir", "binding", "double_billing", "business"} <= names
    assert not ClaimCheck.objects.filter(claim=claim).exclude(outcome="pass").exists()


def test_the_worker_waits_for_a_final_checkpoint_then_verifies(celery_worker, quick_retries):
    kit = make_provider()
    a = anchor_procedure(procedure(), seal=False)
    claim, _ = claim_for(kit, [a])
    _wait_for(
        lambda: (
            ClaimCheck.objects.filter(claim=claim, outcome="wait").exists()
            and _status(claim) == S.VERIFYING
        )
    )
    services.ledger_seal_and_cosign()
    _wait_for(lambda: _status(claim) == S.VERIFIED)
    claim.refresh_from_db()
    assert claim.verification_runs == 1 and claim.waiting_since is None
    assert ClaimCheck.objects.get(claim=claim, name=f"procedure:{a.full_url}").outcome == "pass"


def test_the_sweeper_requeues_a_claim_whose_task_was_lost(celery_worker):
    kit = make_provider()
    worker_queue = app.conf.task_default_queue
    app.conf.task_default_queue = nowhere = f"{worker_queue}-lost"
    try:
        lost, _ = claim_for(kit)  # its task goes to a queue no worker reads, then is lost
    finally:
        app.conf.task_default_queue = worker_queue
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(nowhere)
    time.sleep(0.5)
    assert _status(lost) == S.RECEIVED
    assert claims_sweep_task(older_than_s=600) == 0  # not stuck long enough yet
    Claim.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert claims_sweep_task(older_than_s=600) == 1
    _wait_for(lambda: _status(lost) == S.VERIFIED)


def test_claims_submitted_together_are_each_verified_once(celery_worker):
    """The worker verifies a claim in a batch with the other received claims; each claim's own
    task then finds it concluded: one run, one verdict, one set of checks per claim."""
    kit = make_provider()
    anchored = [anchor_procedure(procedure()) for _ in range(6)]
    bodies = [signed_body(kit, claim_resource([a], organization=kit.organization), [a])
              for a in anchored]  # fmt: skip
    with transaction.atomic():  # committed together: six tasks queued at once
        claims = [submit(kit, body) for body in bodies]
    _wait_for(lambda: all(_status(c) == S.VERIFIED for c in claims))
    time.sleep(0.5)  # every claim's own task has run by now, or runs on a concluded claim
    for claim in claims:
        claim.refresh_from_db()
        assert claim.verification_runs == 1 and claim.verdict == S.VERIFIED
        steps = list(claim.events.order_by("id").values_list("new_status", flat=True))
        assert steps == [S.RECEIVED, S.VERIFYING, S.VERIFIED]
        names = list(ClaimCheck.objects.filter(claim=claim).values_list("name", flat=True))
        assert len(names) == len(set(names)) and "double_billing" in names
