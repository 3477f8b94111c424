"""Coalesced verification (claims/drain.py): on Redis, intake asks for a drain instead of queuing
a task per claim, and a real worker verifies the whole backlog in batches."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from celery.signals import before_task_publish
from django.db import transaction

from claims import drain
from claims.models import Claim
from claims.states import ClaimStatus
from config.celery import app
from tests.claims.factories import (
    anchor_procedure,
    claim_resource,
    make_provider,
    procedure,
    signed_body,
    submit,
)
from tests.claims.test_verify_worker import _wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
S = ClaimStatus


@pytest.fixture
def published():
    """The names of the tasks this process publishes while the test runs."""
    names: Counter[str] = Counter()

    def count(sender=None, **_):
        names[sender] += 1

    before_task_publish.connect(count, weak=False)
    yield names
    before_task_publish.disconnect(count)


def _bodies(kit, count: int) -> list[bytes]:
    anchored = [anchor_procedure(procedure()) for _ in range(count)]
    return [signed_body(kit, claim_resource([a], organization=kit.organization), [a])
            for a in anchored]  # fmt: skip


def test_a_backlog_is_verified_by_a_few_drains_not_a_task_per_claim(celery_worker, published):
    kit = make_provider()
    bodies = _bodies(kit, 30)
    with transaction.atomic():
        first = [submit(kit, body) for body in bodies[:20]]
    later = [submit(kit, body) for body in bodies[20:]]  # one commit each, as API requests do
    claims = first + later
    _wait_for(lambda: Claim.objects.filter(pk__in=[c.pk for c in claims],
                                           status=S.VERIFIED).count() == 30)  # fmt: skip
    assert published["claims.tasks.claim_verify_task"] == 0
    # one drain per moment the queue was empty, never one per claim
    assert 1 <= published["claims.tasks.claims_drain_task"] < 30
    for claim in claims:
        claim.refresh_from_db()
        assert claim.verification_runs == 1
        steps = list(claim.events.order_by("id").values_list("new_status", flat=True))
        assert steps == [S.RECEIVED, S.VERIFYING, S.VERIFIED]


def test_claims_committed_while_a_drain_is_pending_are_verified_by_it(published):
    from celery.contrib.testing.worker import start_worker

    from tests.conftest import REDIS_URL

    queue = f"test-drain-{uuid.uuid4().hex[:8]}"
    app.conf.update(broker_url=REDIS_URL, task_default_queue=queue, task_always_eager=False)
    kit = make_provider()
    bodies = _bodies(kit, 3)
    claims = [submit(kit, body) for body in bodies]  # no worker yet: the first drain waits
    assert published["claims.tasks.claims_drain_task"] == 1
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue]):
        _wait_for(lambda: Claim.objects.filter(pk__in=[c.pk for c in claims],
                                               status=S.VERIFIED).count() == 3)  # fmt: skip
    assert published["claims.tasks.claims_drain_task"] == 1
    assert published["claims.tasks.claim_verify_task"] == 0


def test_without_redis_the_claim_waits_and_intake_still_answers(published, monkeypatch):
    monkeypatch.setattr(drain, "_paused_until", 0.0)  # and back to it after the test
    kit = make_provider()
    first, second = _bodies(kit, 2)
    saved = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        claim = submit(kit, first)  # the commit's hook swallows the failure (and logs it)
        assert drain._paused_until > time.monotonic()  # the next requests skip Redis a while
        app.conf.broker_url = "redis://10.255.255.1:6379/0"  # would hang until its timeout
        began = time.monotonic()
        other = submit(kit, second)
        assert time.monotonic() - began < 1.5  # not held for Redis's 2 s connect timeout
    finally:
        app.conf.broker_url = saved
    statuses = set(
        Claim.objects.filter(pk__in=[claim.pk, other.pk]).values_list("status", flat=True)
    )
    assert statuses == {S.RECEIVED}  # stored; the next drain or the sweeper verifies them
    assert published["claims.tasks.claims_drain_task"] == 0


def test_a_claim_whose_verification_raises_does_not_hold_up_the_others(
    celery_worker, published, monkeypatch
):
    """A bug that makes one claim's verification raise: its batch fails, the drain verifies the
    claims one by one, the others are verified and later drains leave the bad one out."""
    from claims import tasks
    from claims.checks import binding

    monkeypatch.setattr(tasks, "_POISONED", set())
    kit = make_provider()
    bodies = _bodies(kit, 6)
    poisoned = submit(kit, bodies[0])
    real_check = binding.check

    def check(ctx):
        if ctx.claim.pk == poisoned.pk:
            raise RuntimeError("a bug that only this claim meets")
        return real_check(ctx)

    monkeypatch.setattr(binding, "check", check)
    others = [submit(kit, body) for body in bodies[1:]]
    _wait_for(lambda: Claim.objects.filter(pk__in=[c.pk for c in others],
                                           status=S.VERIFIED).count() == 5)  # fmt: skip
    assert Claim.objects.get(pk=poisoned.pk).status == S.RECEIVED  # for the sweeper, logged
    assert {poisoned.pk} == tasks._POISONED
    assert published["claims.tasks.claims_drain_task"] < 20  # no drain loop


def test_another_broker_gets_a_task_per_claim(published, settings):
    settings.CLAIMS_VERIFY_COALESCE = False  # as with the filesystem broker of `make run`
    kit = make_provider()
    (body,) = _bodies(kit, 1)
    submit(kit, body)
    assert published["claims.tasks.claim_verify_task"] == 1
    assert published["claims.tasks.claims_drain_task"] == 0
