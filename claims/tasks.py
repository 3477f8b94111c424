"""Celery entry points for claims: each calls one service.

Verification is idempotent (``claim_verify`` is a no-op unless the claim still waits for it), so
``acks_late`` redelivery after a lost worker is safe. A first attempt verifies its claim in a
batch with other received claims (``claim_verify_many``), so that a worker keeps up with a
fast intake: one transaction and about sixteen statements per batch, whatever its size, instead
of seventeen per claim.
Intake does not queue a task per claim when the broker is Redis: ``claims_drain_task`` verifies
the whole backlog (claims/drain.py). The database is the real to-do list: ``claims_sweep_task``
(beat) re-queues claims whose task was lost.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from claims.models import Claim
from claims.states import ClaimStatus
from claims.verification import claim_verify, claim_verify_many, claims_to_sweep

log = logging.getLogger(__name__)
HELD_RETRY_S = 1.0  # a claim another worker's batch holds is looked at again after this


def verify_backoff_s(retries: int, claim: Claim | None = None) -> float:
    """2, 4, 8... seconds, capped by CLAIMS_VERIFY_BACKOFF_MAX_S and by what is left of the
    claim's CLAIMS_VERIFY_WAIT_MAX_S (the last attempt lands on the deadline, not past it)."""
    base = getattr(settings, "CLAIMS_VERIFY_BACKOFF_BASE_S", 2.0)
    cap = getattr(settings, "CLAIMS_VERIFY_BACKOFF_MAX_S", 300.0)
    countdown = min(base * 2 ** min(retries, 30), cap)
    if claim is not None and claim.waiting_since is not None:
        left = (
            settings.CLAIMS_VERIFY_WAIT_MAX_S
            - (timezone.now() - claim.waiting_since).total_seconds()
        )
        countdown = min(countdown, max(left, 0.0) + 0.1)
    return max(countdown, 0.1)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def claim_verify_task(self, claim_id: int, alone: bool = False) -> None:
    """Verify a claim; while it waits for a final checkpoint, try again with backoff (the
    service turns a wait longer than CLAIMS_VERIFY_WAIT_MAX_S into needs_review). ``alone``:
    never in a batch (a batch with this claim failed)."""
    try:
        claim = _verify(claim_id, first_attempt=self.request.retries == 0 and not alone)
        if claim is None:  # another worker's batch holds it: look again once it has committed
            raise self.retry(countdown=HELD_RETRY_S)
    except Claim.DoesNotExist:
        log.warning("claim %s does not exist: nothing to verify", claim_id)
        return
    except (OperationalError, InterfaceError) as exc:  # the database is away: later
        raise self.retry(exc=exc, countdown=verify_backoff_s(self.request.retries)) from exc
    if claim.status == ClaimStatus.VERIFYING:
        raise self.retry(countdown=verify_backoff_s(self.request.retries, claim))


def _verify(claim_id: int, *, first_attempt: bool) -> Claim | None:
    """A claim a batch already concluded costs one query. On a first attempt, a received claim
    is verified in a batch with up to CLAIMS_VERIFY_BATCH - 1 other received claims (their own
    tasks then find them concluded); a retry goes alone. None: another worker's batch holds the
    claim right now (waiting on its lock would idle this worker; the task looks again shortly,
    and finds it concluded, or waiting for a checkpoint and then retries as usual). A batch
    that fails for another reason than the database is logged and this claim verified alone."""
    # Only what this function and the task read: most tasks find their claim concluded by a
    # batch, and the stored body is kilobytes a worker need not fetch to learn that.
    claim = Claim.objects.only("id", "status", "waiting_since").get(pk=claim_id)
    if claim.status not in (ClaimStatus.RECEIVED, ClaimStatus.VERIFYING):
        return claim  # concluded (by a batch, or by an earlier delivery): nothing to do
    size = int(getattr(settings, "CLAIMS_VERIFY_BATCH", 200))
    if first_attempt and size > 1 and claim.status == ClaimStatus.RECEIVED:
        try:
            began = time.perf_counter()
            claims = claim_verify_many(claim_ids=[claim_id], pull=size - 1)
            log.info("verified %d claims in one batch in %.0f ms", len(claims),
                     (time.perf_counter() - began) * 1e3)  # fmt: skip
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.exception("verifying a batch with claim %s failed: verifying it alone", claim_id)
        else:
            mine = next((c for c in claims if c.pk == claim_id), None)
            if mine is not None:
                return mine
            if Claim.objects.filter(pk=claim_id, status=ClaimStatus.RECEIVED).exists():
                return None  # skipped: locked by another worker's batch
    return claim_verify(claim_id=claim_id)


# Claims a drain message verifies before it hands over to a new message, so that other tasks
# get a turn: a few seconds of work (ledger_seal_task, every 5 s, expires after 10 s).
DRAIN_MAX_CLAIMS = 4_000


# Claims whose verification raised (a bug, not the database) in this worker process: drains
# leave them out, so one bad claim cannot make every batch fail. Each still gets its own task
# from the sweeper (and its error in that task's log) until it is fixed.
_POISONED: set[int] = set()
_POISONED_MAX = 10_000


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def claims_drain_task(self) -> int:
    """Verify received claims in batches until none is left (claims/drain.py); returns how
    many were concluded or found waiting. A claim waiting for a final checkpoint gets its own
    ``claim_verify_task``, which retries with backoff."""
    from claims import drain

    drain.drain_started()
    began = timezone.now()
    size = max(int(getattr(settings, "CLAIMS_VERIFY_BATCH", 200)), 1)
    done = 0
    for batch in range(max(1, DRAIN_MAX_CLAIMS // size)):
        try:
            claims = claim_verify_many(pull=size, skip=_POISONED)
        except (OperationalError, InterfaceError) as exc:  # the database is away: later
            raise self.retry(exc=exc, countdown=verify_backoff_s(self.request.retries)) from exc
        except Exception:
            log.exception("a verification batch failed: verifying its claims one by one")
            claims = _one_by_one(size)
        for claim in claims:
            if claim.status == ClaimStatus.VERIFYING:  # waiting for a final checkpoint
                claim_verify_task.apply_async((claim.pk,), countdown=verify_backoff_s(0, claim))
        done += len(claims)
        if len(claims) < size:
            _look_again_if_held(began)
            return done
        if batch == 0:
            drain.drain_request()  # a backlog: another worker process may help
    drain.drain_request()  # more left: a new message, so other tasks get a turn
    return done


def _one_by_one(size: int) -> list[Claim]:
    """A batch failed: verify the oldest received claims each on its own, in a savepoint; one
    that raises is logged and left out of this process's later drains."""
    ids = (
        Claim.objects.filter(status=ClaimStatus.RECEIVED)
        .exclude(pk__in=_POISONED)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:size]
    )
    out = []
    for claim_id in list(ids):
        try:
            with transaction.atomic():
                out.append(claim_verify(claim_id=claim_id))
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.exception("verifying claim %s failed: left for the sweeper", claim_id)
            if len(_POISONED) < _POISONED_MAX:
                _POISONED.add(claim_id)
    return out


def _look_again_if_held(began) -> None:
    """Claims received before this drain began and still received were locked by someone else
    (another drain verifying them, a correction locking its original): look again shortly,
    as a claim's own task did, rather than leave them to the sweeper. Newer claims asked for
    their own drain."""
    held = Claim.objects.filter(status=ClaimStatus.RECEIVED, created_at__lt=began).exclude(
        pk__in=_POISONED
    )
    if held.exists():
        claims_drain_task.apply_async(countdown=HELD_RETRY_S)


@shared_task(acks_late=True, ignore_result=True)
def claims_sweep_task(older_than_s: int | None = None) -> int:
    """Re-queue claims stuck in received/verifying; returns how many."""
    if older_than_s is None:
        older_than_s = getattr(settings, "CLAIMS_SWEEP_AFTER_S", 600)
    ids = claims_to_sweep(older_than_s=older_than_s)
    for claim_id in ids:
        claim_verify_task.delay(claim_id)
    if ids:
        log.info("re-queued %d claims stuck in verification", len(ids))
    return len(ids)
