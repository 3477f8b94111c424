"""Coalesced verification: one Celery message per backlog, not one per claim.

A Celery task costs a worker a few milliseconds of its own (fetching, decoding, acknowledging the
message, the task's first query), more than verifying a claim in a batch. So intake does not queue
a task per claim: after committing a claim it asks for a *drain* (:func:`verification_requested`),
and a drain verifies every received claim in batches (``claim_verify_many(pull=...)``) until none
is left.

At most one drain is *pending* (published, not started) at a time: a Redis key set with ``SET NX``
says so. A drain deletes the key before it pulls its first batch, so a claim committed after that
moment publishes a new drain, and one committed before it is pulled by this drain: no claim is left
behind (the claim is committed before the key is tried). A drain that finds a full batch asks for
one more drain, so that every worker process helps with a backlog. The key expires after
``CLAIMS_DRAIN_KEY_TTL_S`` in case its drain is lost with a worker; ``acks_late`` redelivers it
anyway, and ``claims_sweep_task`` re-queues any claim left ``received``.

Coalescing needs Redis (``CELERY_BROKER_URL`` redis://). With another broker (the filesystem broker
of ``make run``), or with ``CLAIMS_VERIFY_COALESCE`` off, each claim gets its own
``claim_verify_task`` as before. docs/verification.md ("Queueing").
"""

from __future__ import annotations

import logging
import time
from functools import cache

import redis
from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)


def _broker_url() -> str:
    from config.celery import app

    return str(app.conf.broker_url or "")


def coalescing() -> bool:
    return bool(getattr(settings, "CLAIMS_VERIFY_COALESCE", True)) and _broker_url().startswith(
        ("redis://", "rediss://")
    )


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis() -> redis.Redis:
    return _client(_broker_url())


def _key() -> str:
    """One key per database and queue: nodes (and test runs) sharing a Redis keep their drains
    apart."""
    from config.celery import app

    queue = app.conf.task_default_queue
    return f"claimproof:verify-drain:{connection.settings_dict['NAME']}:{queue}"


# After a failure to reach Redis, requests skip it this long: a Redis that does not answer
# would otherwise hold every intake request for its connect timeout.
_PAUSE_S = 5.0
_paused_until = 0.0


def verification_requested(claim_id: int) -> None:
    """Call once ``claim_id`` is committed: queue what verifies it. A broker or Redis failure is
    logged and swallowed: the claim is in the database, and the next drain (any claim's, once
    Redis answers again: a drain pulls every received claim) or the sweeper verifies it."""
    global _paused_until
    from claims.tasks import claim_verify_task

    if time.monotonic() < _paused_until:
        return
    try:
        if not coalescing():
            claim_verify_task.delay(claim_id)
        else:
            drain_request()
    except Exception:  # any broker failure: the database is the to-do list
        _paused_until = time.monotonic() + _PAUSE_S
        log.warning(
            "could not queue verification of claim %s; not trying for %.0f s (the next drain "
            "or the sweeper verifies it)", claim_id, _PAUSE_S,
        )  # fmt: skip


def drain_request() -> bool:
    """Publish a drain unless one is pending already; True when this call published it."""
    from claims.tasks import claims_drain_task

    client = _redis()
    ttl = int(getattr(settings, "CLAIMS_DRAIN_KEY_TTL_S", 30))
    if not client.set(_key(), b"1", nx=True, ex=ttl):
        return False
    try:
        claims_drain_task.delay()
    except Exception:
        client.delete(_key())  # the next claim tries again
        raise
    return True


def drain_started() -> None:
    """The pending drain starts: from now on a newly committed claim publishes another."""
    _redis().delete(_key())
