"""Every write of batch jobs: start, plan, process a chunk, finish, cancel; and progress.

* ``job_start`` records a queued job and queues ``job_run_task`` once committed.
* ``job_plan`` splits the scope into chunks with keyset iteration
  (``.filter(id__gt=last).order_by("id")`` with LIMIT), reading one chunk ahead so that the
  last two chunks' worth is tapered: it never holds more than two chunks of ids. Each chunk is
  created (unique per job and number) together with ``total += len(ids)``; a redelivered
  planner resumes after the last planned chunk (and tapers what is left again).
* ``chunk_process`` records the claims of a chunk that are not re-verified (paid, denied...) in
  one INSERT, then re-verifies the others in batches of ``JOBS_VERIFY_BATCH``: one transaction
  locks the batch's claims, starts a run of each (one UPDATE for all), verifies them together
  (``claim_verify_many``) and writes their ``BatchResult`` rows (unique per job and claim). Then
  one transaction moves the chunk to ``done`` (compare-and-set) and adds its counts to the job
  with ``F()``. Run twice, at once, or again after a worker died half way, it re-verifies each
  claim once and counts it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from claims.models import Claim, ClaimCheck, Provider, ProviderKey
from claims.states import (
    TRANSITIONS,
    ClaimStatus,
    claim_transition,
    claim_transitions,
    claim_transitions_many,
)
from claims.verification import claim_verify, claim_verify_many
from config.errors import Conflict, Unprocessable
from jobs.models import BatchChunk, BatchJob, BatchResult

log = logging.getLogger(__name__)
S = ClaimStatus
J = BatchJob.Status
R = BatchResult.Outcome
# States a claim may be re-verified from (claims/states.py: -> verifying).
REVERIFIABLE = frozenset(s for s, nxt in TRANSITIONS.items() if S.VERIFYING in nxt) - {
    S.RECEIVED,
    S.VERIFYING,
}
SCOPE_KEYS = frozenset({"all", "provider", "kid", "since", "until", "checkpoint"})


def chunk_size() -> int:
    return max(1, int(getattr(settings, "JOBS_CHUNK_SIZE", 200)))


# --- scope ---------------------------------------------------------------------------------------


def scope_clean(scope: dict) -> dict:
    """The scope as stored: known keys only, values checked. Raises ``Unprocessable``."""
    if not isinstance(scope, dict) or not scope:
        raise Unprocessable('a scope is a JSON object, e.g. {"all": true}', code="bad_scope")
    unknown = set(scope) - SCOPE_KEYS
    if unknown:
        raise Unprocessable(f"unknown scope keys: {', '.join(sorted(unknown))}", code="bad_scope")
    clean: dict = {}
    if scope.get("all"):
        if len(scope) > 1:
            raise Unprocessable("'all' takes no other scope keys", code="bad_scope")
        return {"all": True}
    if "provider" in scope:
        try:
            clean["provider"] = int(scope["provider"])
        except (TypeError, ValueError) as exc:
            raise Unprocessable("provider is a provider id", code="bad_scope") from exc
        if not Provider.objects.filter(pk=clean["provider"]).exists():
            raise Unprocessable(f"no provider {clean['provider']}", code="bad_scope")
    if "kid" in scope:
        clean["kid"] = str(scope["kid"])
        if not ProviderKey.objects.filter(kid=clean["kid"]).exists():
            raise Unprocessable(f"no provider key {clean['kid']!r}", code="bad_scope")
    for name in ("since", "until"):
        if scope.get(name):
            value = scope[name]
            when = value if isinstance(value, datetime) else parse_datetime(str(value))
            if when is None:
                raise Unprocessable(f"{name} is an ISO 8601 date and time", code="bad_scope")
            if timezone.is_naive(when):
                when = timezone.make_aware(when, UTC)
            clean[name] = when.isoformat()
    if "checkpoint" in scope:
        try:
            clean["checkpoint"] = int(scope["checkpoint"])
        except (TypeError, ValueError) as exc:
            raise Unprocessable("checkpoint is a tree size", code="bad_scope") from exc
    if not clean:
        raise Unprocessable('the scope selects nothing: say {"all": true}', code="bad_scope")
    return clean


def scope_claims(scope: dict) -> QuerySet[Claim]:
    """The claims of a (clean) scope, unordered; the keys combine with AND."""
    claims = Claim.objects.all()
    if "provider" in scope:
        claims = claims.filter(provider_id=scope["provider"])
    if "kid" in scope:
        claims = claims.filter(kid=scope["kid"])
    if "since" in scope:
        claims = claims.filter(created_at__gte=parse_datetime(scope["since"]))
    if "until" in scope:
        claims = claims.filter(created_at__lt=parse_datetime(scope["until"]))
    if "checkpoint" in scope:  # the claim's latest run proved its procedures against it
        proven = ClaimCheck.objects.filter(
            claim=OuterRef("pk"),
            run=OuterRef("verification_runs"),
            evidence__checkpoint__size=scope["checkpoint"],
        )
        claims = claims.filter(Exists(proven))
    return claims


TAPER_FROM = 16  # chunks of this size or more end with a tapered tail


def scope_id_chunks(scope: dict, *, after: int = 0, size: int | None = None) -> Iterator[list]:
    """Claim ids of the scope in ascending chunks of ``size``, one query (with LIMIT) per chunk,
    reading one chunk ahead so that the last two chunks' worth can be tapered (:func:`taper`):
    with several workers, the job then ends with small chunks, and no worker is left with a
    whole chunk to do while the others idle."""
    size = size or chunk_size()
    claims = scope_claims(scope).order_by("id").values_list("id", flat=True)
    ahead, last = 2 * size, after
    ids: list[int] = []
    while True:
        ids += claims.filter(id__gt=last)[: ahead - len(ids)]
        if len(ids) < ahead:  # the end of the scope is in sight
            yield from taper(ids, size)
            return
        last = ids[-1]
        yield ids[:size]
        ids = ids[size:]


def taper(ids: list[int], size: int) -> Iterator[list[int]]:
    """``ids`` (at most two chunks' worth) in pieces of about half of what is left, from ``size``
    down to an eighth of it: 400 ids in chunks of 200 go as 200, 100, 50, 25, 25. Chunks under
    TAPER_FROM are cut plainly (their overhead would outweigh the balance)."""
    least = max(1, size // 8) if size >= TAPER_FROM else size
    while ids:
        n = min(size, max(least, -(-len(ids) // 2)))
        if len(ids) - n < least:
            n = len(ids)  # no piece smaller than ``least`` is left behind
        if n > size:
            n = size
        yield ids[:n]
        ids = ids[n:]


# --- starting, planning ------------------------------------------------------------------------


def job_start(scope: dict, user=None, *, reason: str = "") -> BatchJob:
    """Record a queued job over ``scope`` and queue its planning once committed."""
    clean = scope_clean(scope)
    with transaction.atomic():
        job = BatchJob.objects.create(
            kind=BatchJob.Kind.VERIFY,
            scope=clean,
            reason=reason[:300],
            started_by=user if getattr(user, "is_authenticated", False) else None,
        )
        transaction.on_commit(lambda: _enqueue_run(job.pk))
    return job


def job_start_for_revoked_key(*, kid: str, reason: str = "") -> BatchJob | None:
    """The job a key revocation starts (on commit of the revocation): everything it signed."""
    if not Claim.objects.filter(kid=kid).exists():
        return None
    why = f"key {kid} revoked" + (f": {reason}" if reason else "")
    return job_start({"kid": kid}, None, reason=why)


def job_start_nightly() -> BatchJob | None:
    """The nightly ``all`` job, unless one is still queued or running."""
    if BatchJob.objects.filter(scope={"all": True}, status__in=[J.QUEUED, J.RUNNING]).exists():
        log.info("nightly re-verification skipped: an 'all' job is still running")
        return None
    return job_start({"all": True}, None, reason="nightly")


def job_cancel(job: BatchJob, user=None, *, reason: str = "") -> BatchJob:
    """Stop a job (compare-and-set from queued or running): chunks not started yet do nothing
    when they are delivered; a chunk under way stops after the batch it is in. Raises
    ``Conflict`` (``job_finished``) when the job had already ended."""
    from audit.services import audit_record

    actor = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        moved = BatchJob.objects.filter(pk=job.pk, status__in=[J.QUEUED, J.RUNNING]).update(
            status=J.CANCELLED, finished_at=timezone.now(), updated_at=timezone.now()
        )
        job.refresh_from_db()
        if not moved:
            raise Conflict(
                f"job {job.pk} has already ended ({job.status}): there is nothing to cancel",
                code="job_finished",
            )
        audit_record(
            actor=actor,
            action="job.cancel",
            target=f"job:{job.pk}",
            why=reason,
            data={"done": job.done, "total": job.total},
        )
    return job


def job_plan(job_id: int, *, dispatch: Callable[[int], None] | None = None) -> BatchJob:
    """Split the job's scope into chunks and hand each, once its row is committed, to
    ``dispatch`` (default: queue ``job_chunk_task``). Idempotent: a second call re-dispatches the
    pending chunks and resumes after the last one planned."""
    dispatch = dispatch or _enqueue_chunk
    now = timezone.now()
    BatchJob.objects.filter(pk=job_id, status=J.QUEUED).update(
        status=J.RUNNING, started_at=now, updated_at=now
    )
    job = BatchJob.objects.get(pk=job_id)
    if job.status != J.RUNNING or job.planned:
        return job
    # Redelivered: chunks already planned are re-dispatched (a chunk done is a no-op).
    pending = BatchChunk.objects.filter(job=job, status=BatchChunk.Status.PENDING)
    for chunk_id in pending.order_by("number").values_list("pk", flat=True).iterator():
        dispatch(chunk_id)
    last = 0
    tail = BatchChunk.objects.filter(job=job).order_by("-number").values("number", "last_id")
    if head := tail.first():
        last, number = head["last_id"], head["number"] + 1
    else:
        number = 0
    for ids in scope_id_chunks(job.scope, after=last):
        if BatchJob.objects.filter(pk=job_id, status=J.CANCELLED).exists():
            return BatchJob.objects.get(pk=job_id)
        try:
            with transaction.atomic():
                chunk = BatchChunk.objects.create(
                    job=job, number=number, first_id=ids[0], last_id=ids[-1], ids=ids
                )
                BatchJob.objects.filter(pk=job_id).update(
                    total=F("total") + len(ids), chunks=F("chunks") + 1, updated_at=timezone.now()
                )
        except IntegrityError:  # another delivery of the planning got there first: it goes on
            log.info("job %s: chunk %s planned by another delivery; leaving it", job_id, number)
            return BatchJob.objects.get(pk=job_id)
        dispatch(chunk.pk)
        number += 1
    BatchJob.objects.filter(pk=job_id).update(planned=True, updated_at=timezone.now())
    return _finish_if_complete(job_id)


def _enqueue_run(job_id: int) -> None:
    """Queue the planning. The job row is committed: if the broker is away, the sweeper
    (``jobs_sweep_task``) queues it later, and the caller (a key revocation) is not failed."""
    from jobs.tasks import job_run_task

    try:
        job_run_task.delay(job_id)
    except Exception:  # any broker failure: the database is the to-do list
        log.warning("could not queue job %s; the sweeper will", job_id)


def _enqueue_chunk(chunk_id: int) -> None:
    transaction.on_commit(lambda: _send_chunk(chunk_id))


def _send_chunk(chunk_id: int) -> None:
    """Queue a chunk. Its row is committed: if the broker is away, planning goes on and the
    sweeper queues the chunk once the job stalls."""
    from jobs.tasks import job_chunk_task

    try:
        job_chunk_task.delay(chunk_id)
    except Exception:  # any broker failure: the database is the to-do list
        log.warning("could not queue chunk %s; the sweeper will", chunk_id)


def _finish_if_complete(job_id: int) -> BatchJob:
    BatchJob.objects.filter(
        pk=job_id, status=J.RUNNING, planned=True, chunks_done__gte=F("chunks")
    ).update(status=J.DONE, finished_at=timezone.now())
    return BatchJob.objects.get(pk=job_id)


# --- processing a chunk ------------------------------------------------------------------------


def chunk_process(chunk_id: int) -> BatchChunk:
    """Re-verify the claims of a chunk that are not done yet, then record the chunk as done."""
    chunk = BatchChunk.objects.select_related("job").get(pk=chunk_id)
    job = chunk.job
    if chunk.status == BatchChunk.Status.DONE or job.status != J.RUNNING:
        return chunk
    BatchChunk.objects.filter(pk=chunk.pk).update(
        attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    handled = set(
        BatchResult.objects.filter(chunk=chunk).values_list("claim_id", flat=True)
    )  # an earlier attempt of this chunk did these
    todo = _skip_not_reverifiable(job, chunk, [i for i in chunk.ids if i not in handled])
    size = verify_batch_size()
    for start in range(0, len(todo), size):
        if start and _cancelled(job.pk):  # stop between batches; the chunk stays pending
            return chunk
        _reverify_batch(job, chunk, todo[start : start + size])
    _chunk_done(chunk)
    _finish_if_complete(job.pk)
    chunk.refresh_from_db()
    return chunk


def _cancelled(job_id: int) -> bool:
    return BatchJob.objects.filter(pk=job_id, status=J.CANCELLED).exists()


def _skip_not_reverifiable(job: BatchJob, chunk: BatchChunk, ids: list[int]) -> list[int]:
    """Record, in one INSERT, the claims of ``ids`` in a state that is not re-verified (paid,
    denied, superseded...: most claims of a nightly job), and return the others. A row written
    by another delivery of the chunk meanwhile is left as it is (``ON CONFLICT DO NOTHING``)."""
    if not ids:
        return []
    now = timezone.now()
    rows, todo = [], []
    states = Claim.objects.filter(pk__in=ids).values_list("pk", "status", "verdict")
    for claim_id, status, verdict in states.order_by("pk"):
        if status in REVERIFIABLE:
            todo.append(claim_id)
            continue
        old = verdict or status
        rows.append(
            BatchResult(
                job=job,
                chunk=chunk,
                claim_id=claim_id,
                outcome=R.SKIPPED,
                old_verdict=old,
                new_verdict=old,
                reason=f"not re-verified: the claim is {status}",
                at=now,
            )
        )
    BatchResult.objects.bulk_create(rows, ignore_conflicts=True)
    return todo  # claims gone since planning have no row: counted as skipped by _chunk_done


def _chunk_done(chunk: BatchChunk) -> None:
    """Move the chunk to done once, and add its counts to the job in the same transaction."""
    with transaction.atomic():
        counts = BatchResult.objects.filter(chunk=chunk).aggregate(
            passed=Count("pk", filter=Q(outcome=R.PASSED)),
            failed=Count("pk", filter=Q(outcome=R.FAILED)),
            waiting=Count("pk", filter=Q(outcome=R.WAITING)),
            skipped=Count("pk", filter=Q(outcome=R.SKIPPED)),
            errors=Count("pk", filter=Q(outcome=R.ERROR)),
            changed=Count("pk", filter=Q(changed=True)),
            rows=Count("pk"),
        )
        done = len(chunk.ids)
        missing = done - counts.pop("rows")  # claims gone since planning: skipped
        now = timezone.now()
        moved = BatchChunk.objects.filter(pk=chunk.pk, status=BatchChunk.Status.PENDING).update(
            status=BatchChunk.Status.DONE, done=done, finished_at=now
        )
        if moved != 1:
            return  # another delivery of this chunk counted it
        counts["skipped"] += missing
        BatchJob.objects.filter(pk=chunk.job_id).update(
            done=F("done") + done,
            chunks_done=F("chunks_done") + 1,
            updated_at=now,
            **{name: F(name) + value for name, value in counts.items()},
        )


@dataclass
class _Outcome:
    outcome: str
    old: str
    new: str = ""
    reason: str = ""
    run: int | None = None

    def row(self, job: BatchJob, chunk: BatchChunk, claim_id: int, at: datetime) -> BatchResult:
        return BatchResult(
            job=job,
            chunk=chunk,
            claim_id=claim_id,
            outcome=self.outcome,
            old_verdict=self.old,
            new_verdict=self.new,
            changed=self.outcome in (R.PASSED, R.FAILED) and self.new != self.old,
            reason=self.reason,
            run=self.run,
            at=at,
        )


def verify_batch_size() -> int:
    return max(1, int(getattr(settings, "JOBS_VERIFY_BATCH", 200)))


def _reverify_batch(job: BatchJob, chunk: BatchChunk, ids: list[int]) -> None:
    """Re-verify ``ids`` together in one transaction (``claim_verify_many``: each table read and
    written once for all of them), their ``BatchResult`` rows with them. Should the batch raise
    for anything but the database, each claim goes again on its own, so that one bad claim is
    one error row and the others are re-verified."""
    try:
        with transaction.atomic():
            _reverify_together(job, chunk, ids)
    except (OperationalError, InterfaceError):
        raise  # the database is away: the task retries the chunk
    except Exception:
        log.warning("job %s: %d claims failed together; one by one", job.pk, len(ids), exc_info=1)
        for claim_id in ids:
            claim_reverify_in_job(job=job, chunk=chunk, claim_id=claim_id)


def _reverify_together(job: BatchJob, chunk: BatchChunk, ids: list[int]) -> None:
    locked = (
        Claim.objects.select_for_update(of=("self",))
        .filter(pk__in=ids)
        .only("id", "public_id", "status", "verdict", "verification_runs")  # not the bodies
        .order_by("pk")
    )
    claims = list(locked)  # in id order: two deliveries of a chunk queue up, never deadlock
    # Read after the locks: a row another delivery committed while we waited is seen here.
    done = set(
        BatchResult.objects.filter(job=job, claim_id__in=ids).values_list("claim_id", flat=True)
    )
    now = timezone.now()
    rows: list[BatchResult] = []
    started: list[tuple[Claim, str, str, int]] = []  # claim, old verdict, old status, run
    for claim in claims:
        if claim.pk in done:
            continue
        old = claim.verdict or claim.status
        if claim.status not in REVERIFIABLE:
            why = f"not re-verified: the claim is {claim.status}"
            rows.append(_Outcome(R.SKIPPED, old, old, why).row(job, chunk, claim.pk, now))
            continue
        started.append((claim, old, claim.status, claim.verification_runs + 1))
    if started:  # every run starts in one UPDATE (as claim_reverify would, claim by claim)
        stuck = claim_transitions_many(
            [
                (c, [(S.VERIFYING, f"batch job {job.pk}: re-verification (run {run})", None)],
                 {"verification_runs": run, "waiting_since": None})
                for c, _, _, run in started
            ]
        )  # fmt: skip
        if stuck:  # we hold their locks: nobody can have moved them
            raise RuntimeError(f"claims {[c.pk for c in stuck]} moved under our locks")
        after = {c.pk: c for c in claim_verify_many(claim_ids=[c.pk for c, *_ in started])}
        missing = [c.pk for c, *_ in started if c.pk not in after]
        if missing:  # we hold their locks: verification cannot have skipped them
            raise RuntimeError(f"claims {missing} were not verified in the batch")
        reasons = _reasons([(after[c.pk], run) for c, _, _, run in started])
        for claim, old, was, run in started:
            verified = after[claim.pk]
            outcome = _conclusion(job, verified, old, was, run, reasons.get(claim.pk))
            rows.append(outcome.row(job, chunk, claim.pk, now))
    BatchResult.objects.bulk_create(rows)


def claim_reverify_in_job(*, job: BatchJob, chunk: BatchChunk, claim_id: int) -> None:
    """One claim on its own: a new verification run, compared with the verdict before, recorded
    with its ``BatchResult`` in one transaction."""
    try:
        with transaction.atomic():
            try:
                claim = Claim.objects.select_for_update().get(pk=claim_id)
            except Claim.DoesNotExist:
                return  # counted as skipped when the chunk is done
            # A new statement after the lock (not an EXISTS in the locking one, whose snapshot
            # predates the wait): another delivery's row committed meanwhile is seen.
            if BatchResult.objects.filter(job=job, claim_id=claim_id).exists():
                return
            _reverify(job, claim).row(job, chunk, claim_id, timezone.now()).save()
    except (OperationalError, InterfaceError):
        raise  # the database is away: the task retries the chunk
    except Exception as exc:  # one bad claim does not stop the job: it is counted as an error
        log.exception("job %s: re-verifying claim %s failed", job.pk, claim_id)
        BatchResult.objects.get_or_create(
            job=job,
            claim_id=claim_id,
            defaults={
                "chunk": chunk,
                "outcome": R.ERROR,
                "reason": repr(exc)[:1000],
                "at": timezone.now(),
            },
        )


def _reverify(job: BatchJob, claim: Claim) -> _Outcome:
    """What ``claim_reverify`` does, run here and now: the job's worker is the verifier."""
    old = claim.verdict or claim.status
    if claim.status not in REVERIFIABLE:
        return _Outcome(R.SKIPPED, old, old, f"not re-verified: the claim is {claim.status}")
    was = claim.status
    run = _start_run(job, claim)
    claim = claim_verify(claim_id=claim.pk)
    return _conclusion(job, claim, old, was, run, None)


def _start_run(job: BatchJob, claim: Claim) -> int:
    """``-> verifying`` with the next run number, in one UPDATE (as ``claim_reverify`` does)."""
    run = claim.verification_runs + 1
    claim_transitions(
        claim=claim,
        steps=[(S.VERIFYING, f"batch job {job.pk}: re-verification (run {run})", None)],
        fields={"verification_runs": run, "waiting_since": None},
    )
    return run


def _conclusion(
    job: BatchJob, claim: Claim, old: str, was: str, run: int, why: str | None
) -> _Outcome:
    """Compare the new verdict with the old one: a changed verdict goes to the adjusters; an
    unchanged one leaves the claim where it stood (``was``: in review, waiting for information)."""
    if claim.status == S.VERIFYING:  # waiting for a final checkpoint: the usual task takes over
        transaction.on_commit(lambda: _enqueue_verify(claim.pk))
        why = "waiting for a final checkpoint"
        if was == S.APPROVED:  # the approval cannot stand on a verdict nobody knows yet
            why += _approval_withdrawn(job, claim, f"batch job {job.pk}: re-verification {why}")
        return _Outcome(R.WAITING, old, "", why, run)
    new = claim.verdict
    outcome = R.FAILED if new == S.REJECTED else R.PASSED
    reason = why or _why(claim, run)
    if new == old:
        if was in KEPT and claim.status != was and was in TRANSITIONS[claim.status]:
            back = f"batch job {job.pk}: verdict unchanged ({new}); back to {was}"
            claim_transition(claim=claim, to=was, reason=back)
        elif was == S.APPROVED:
            _approval_stands(job, claim, new)
        return _Outcome(outcome, old, new, reason, run)
    reason = f"verdict changed from {old} to {new}: {reason}"
    if was == S.APPROVED:
        reason = f"approved, not paid; {reason}"
    if claim.status == S.REJECTED and old in PASSING:
        reason += _back_to_adjusters(job, claim, reason)
    elif claim.status != S.NEEDS_REVIEW and S.NEEDS_REVIEW in TRANSITIONS[claim.status]:
        claim_transition(claim=claim, to=S.NEEDS_REVIEW, reason=f"batch job {job.pk}: {reason}")
    if was == S.APPROVED:
        reason += _approval_withdrawn(job, claim, f"batch job {job.pk}: {reason}")
    return _Outcome(outcome, old, new, reason, run)


def _approval_stands(job: BatchJob, claim: Claim, verdict: str) -> None:
    """An approved claim whose verdict did not change goes back to approved with its payout
    (``verified``/``needs_review -> approved``); its lines read as approved again (the
    re-verification left the ones nobody adjusted pending, as the approval had not)."""
    from claims.models import ClaimItem

    claim_transition(
        claim=claim,
        to=S.APPROVED,
        reason=f"batch job {job.pk}: verdict unchanged ({verdict}); the approval stands",
    )
    ClaimItem.objects.filter(claim=claim, adjudication=ClaimItem.Adjudication.PENDING).update(
        adjudication=ClaimItem.Adjudication.APPROVED,
        eligible=F("submitted"),
        benefit=F("submitted"),
    )


def _approval_withdrawn(job: BatchJob, claim: Claim, reason: str) -> str:
    """The claim left approved: its payout is voided (no payment run pays it; a new approval,
    in a new review round, reissues it). Returns what to add to the result's reason."""
    from review.services import payout_void

    payout = payout_void(claim=claim, reason=reason)
    return f"; payout {payout.reference} voided" if payout else ""


PASSING = frozenset({S.VERIFIED, S.NEEDS_REVIEW})
KEPT = frozenset({S.NEEDS_REVIEW, S.INFO_REQUESTED})  # where an adjuster put the claim


def _back_to_adjusters(job: BatchJob, claim: Claim, reason: str) -> str:
    """A claim that passed before and fails now is not rejected behind the adjusters' backs: it
    goes back to their queue (``needs_review``, verdict ``rejected``) with the reason.

    The state table has no ``rejected -> needs_review`` today; it allows ``rejected ->
    verifying -> needs_review``, taken here in one UPDATE. Leaving ``rejected`` the claim bills
    its procedures again (its anchors live): if another claim bills one of them by now, it stays
    rejected. Returns what to add to the reason."""
    from claims.models import BilledAnchor

    why = f"batch job {job.pk}: {reason}; back to the adjusters"
    try:
        with transaction.atomic():
            claim_transitions(
                claim=claim, steps=[(S.VERIFYING, why, None), (S.NEEDS_REVIEW, why, None)]
            )
            BilledAnchor.objects.filter(claim_id=claim.pk).update(live=True)
    except IntegrityError:  # the partial unique index: another live claim bills an anchor
        claim.refresh_from_db(fields=["status", "updated_at"])
        return "; stays rejected: another claim bills its procedures now"
    return "; back to the adjusters (needs review)"


def _reasons(pairs: list[tuple[Claim, int]]) -> dict[int, str]:
    """``_why`` for many claims in one query (none for the ones verified: every check passed)."""
    where = Q()
    for claim, run in pairs:
        if claim.status != S.VERIFYING and claim.verdict != S.VERIFIED:
            where |= Q(claim_id=claim.pk, run=run)
    if not where:
        return {}
    rows = ClaimCheck.objects.filter(where, outcome__in=["fail", "warn"])
    first: dict[int, tuple] = {}
    for claim_id, outcome, sentence, pk in rows.values_list(
        "claim_id", "outcome", "sentence", "id"
    ):
        if claim_id not in first or (outcome, pk) < first[claim_id][:2]:
            first[claim_id] = (outcome, pk, sentence)
    return {claim_id: sentence for claim_id, (_, _, sentence) in first.items()}


def _why(claim: Claim, run: int) -> str:
    """The first failing check's sentence, else the first warning's, else all passed."""
    if claim.verdict == S.VERIFIED:  # no check failed or warned: nothing to read
        return "every check passed"
    rows = ClaimCheck.objects.filter(claim=claim, run=run, outcome__in=["fail", "warn"])
    first = sorted(rows.values_list("outcome", "sentence", "id"), key=lambda r: (r[0], r[2]))
    return first[0][1] if first else "every check passed"


def _enqueue_verify(claim_id: int) -> None:
    from claims.tasks import claim_verify_task

    claim_verify_task.delay(claim_id)


# --- reading ---------------------------------------------------------------------------------


def job_progress(job: BatchJob, *, now: datetime | None = None) -> dict:
    """Counters, percent, rate (claims per second since the job started) and ETA in seconds
    (None until the rate and the total are known)."""
    now = now or timezone.now()
    end = job.finished_at or now
    elapsed = (end - job.started_at).total_seconds() if job.started_at else 0.0
    rate = job.done / elapsed if elapsed > 0 and job.done else 0.0
    left = max(job.total - job.done, 0)
    eta = None
    if job.status == J.DONE:
        eta = 0.0
    elif rate > 0 and job.planned:
        eta = left / rate
    return {
        "id": job.pk,
        "kind": job.kind,
        "scope": job.scope,
        "reason": job.reason,
        "status": job.status,
        "planned": job.planned,
        "chunks": job.chunks,
        "chunks_done": job.chunks_done,
        "total": job.total,
        "done": job.done,
        "passed": job.passed,
        "failed": job.failed,
        "changed": job.changed,
        "waiting": job.waiting,
        "skipped": job.skipped,
        "errors": job.errors,
        "percent": round(100.0 * job.done / job.total, 1) if job.total else 0.0,
        "rate_per_s": round(rate, 2),
        "eta_s": None if eta is None else round(eta, 1),
        "elapsed_s": round(elapsed, 1),
        "started_by": getattr(job.started_by, "username", None),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


CSV_HEADER = [
    "claim",
    "provider",
    "kid",
    "old_verdict",
    "new_verdict",
    "status",
    "run",
    "reason",
    "checked_at",
]


def job_changes_rows(job: BatchJob) -> Iterator[list]:
    """The claims whose verdict changed, one CSV row each (header first), streamed."""
    yield CSV_HEADER
    rows = (
        BatchResult.objects.filter(job=job, changed=True)
        .order_by("claim_id")
        .values_list(
            "claim__public_id",
            "claim__provider__name",
            "claim__kid",
            "old_verdict",
            "new_verdict",
            "claim__status",
            "run",
            "reason",
            "at",
        )
    )
    for public_id, provider, kid, old, new, status, run, reason, at in rows.iterator(2000):
        yield [str(public_id), provider, kid, old, new, status, run, reason, at.isoformat()]


def jobs_to_sweep(*, older_than_s: int) -> tuple[list[int], list[int]]:
    """Jobs whose planning, and chunks whose task, look lost: nothing written for a while (a
    chunk counts only when its whole job has stalled, not while it waits its turn in the queue).
    Every pending chunk of a stalled job at once (up to 10,000: a job of about two million claims):
    after a broker restarted empty, the job must not stall again after each handful."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    plans = list(
        BatchJob.objects.filter(
            status__in=[J.QUEUED, J.RUNNING], planned=False, updated_at__lt=cutoff
        ).values_list("pk", flat=True)[:100]
    )
    chunks = list(
        BatchChunk.objects.filter(
            status=BatchChunk.Status.PENDING,
            job__status=J.RUNNING,
            job__updated_at__lt=cutoff,
            updated_at__lt=cutoff,
        ).values_list("pk", flat=True)[:10_000]
    )
    return plans, chunks
