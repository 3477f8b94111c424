"""The beat task, run by a real Celery worker on Redis, seals and gathers a quorum."""

import time

import pytest

from ledger import services
from ledger.tasks import ledger_seal_task
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def _wait_for(predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("the worker did not get there in time")


def test_worker_seals_pending_anchors_into_a_final_checkpoint(celery_worker, settings):
    settings.LEDGER_QUORUM = 2
    init_ledger()
    for n in range(5):
        services.anchor_append(data=signed_anchor(n))
    ledger_seal_task.delay()

    def final_checkpoint():
        cp = services.checkpoint_latest()
        return cp if cp.size == 5 and services.checkpoint_is_final(cp) else None

    cp = _wait_for(final_checkpoint)
    # Final at 2; the worker stores the third cosignature a moment later (each is committed
    # as it is checked), so wait for it rather than race it.
    assert _wait_for(lambda: cp.cosignatures.count() == 3)
