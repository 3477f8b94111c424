"""Verifying a claim: run every check, record each with its evidence, move the claim.

``claim_verify`` is what the Celery task calls. It is idempotent: a claim that is not
``received`` or ``verifying`` is left alone, so a redelivered message is a no-op. The checks that
only read run first, without a lock; then one transaction locks the claim row, reserves the
anchors (double billing), supersedes or voids an original, replaces this run's check rows and
moves the claim (every step of the run in one UPDATE, ``claim_transitions``). Two workers on
one claim serialise on the row lock and the second finds it done.

A run is numbered (``Claim.verification_runs``): received -> verifying starts run 1, and
``claim_reverify`` (batch jobs) starts the next. While a run waits for a final checkpoint, each
attempt rewrites that run's rows: a run never has two rows for one check. docs/verification.md.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from claims import disclosure
from claims.checks import FAIL, PASS, WAIT, WARN, Context, Result, billing, binding, business
from claims.checks import fhir as fhir_check
from claims.checks import ledger as ledger_check
from claims.checks import signature as signature_check
from claims.models import Claim, ClaimCheck, ClaimItem
from claims.states import ClaimStatus, claim_transition, claim_transitions

log = logging.getLogger(__name__)
S = ClaimStatus
WORKING = frozenset({S.RECEIVED, S.VERIFYING})  # states verification acts on


def claim_verify(*, claim_id: int) -> Claim:
    """Verify ``claim_id`` if it is waiting for verification; return it as it now stands.

    A claim still ``verifying`` afterwards is waiting for a final checkpoint: call again later
    (the task retries with backoff). Raises ``Claim.DoesNotExist`` for an unknown id.
    """
    claim = Claim.objects.select_related("provider__member").get(pk=claim_id)
    if claim.status not in WORKING:
        return claim
    ctx = Context(claim)
    results, correction = _read_checks(ctx)
    return _conclude(ctx, results, correction)


def claim_reverify(*, claim_id: int, actor=None, reason: str = "re-verification") -> Claim:
    """Start a new verification run of a concluded claim (batch jobs, after a key revocation)
    and queue it once committed. Raises ``InvalidTransition`` from states that cannot."""
    with transaction.atomic():
        claim = Claim.objects.select_for_update().get(pk=claim_id)
        run = claim.verification_runs + 1
        claim_transition(claim=claim, to=S.VERIFYING, actor=actor, reason=f"{reason} (run {run})")
        Claim.objects.filter(pk=claim.pk).update(verification_runs=run, waiting_since=None)
        claim.verification_runs, claim.waiting_since = run, None
        transaction.on_commit(lambda: _enqueue(claim.pk))
    return claim


def claims_to_sweep(*, older_than_s: int, limit: int = 500) -> list[int]:
    """Claims left in received/verifying for longer than ``older_than_s``: their task was lost
    (or never queued). Each attempt of a waiting claim touches ``updated_at``."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    return list(
        Claim.objects.filter(status__in=WORKING, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )


def _enqueue(claim_id: int) -> None:
    from claims.tasks import claim_verify_task

    claim_verify_task.delay(claim_id)


# --- the checks that only read ------------------------------------------------------------------


def _read_checks(ctx: Context) -> tuple[list[Result], billing.Correction | None]:
    results = []
    try:  # floats, as the provider's EHR committed them; intake refused anything odd
        ctx.bundle = json.loads(bytes(ctx.claim.body))
    except ValueError:
        ctx.bundle = None
    results.append(signature_check.check(ctx))
    results.append(fhir_check.check(ctx))
    try:
        ctx.disclosed = disclosure.disclosed_procedures(ctx.bundle or {})
    except disclosure.DisclosureError as exc:
        results.append(Result("procedures", FAIL, f"The disclosures cannot be read: {exc}."))
    results += ledger_check.check(ctx)
    if (bound := binding.check(ctx)) is not None:
        results.append(bound)
    related, correction = billing.correction(ctx)
    if related is not None:
        results.append(related)
    void = correction is not None and correction.relationship == billing.VOIDS
    if (flagged := business.check(ctx, void=void)) is not None:
        results.append(flagged)
    return results, correction


# --- the transaction that writes ----------------------------------------------------------------


@transaction.atomic
def _conclude(ctx: Context, results: list[Result], correction) -> Claim:
    """Lock the claim, check its state again, reserve, record the checks and move the claim:
    one UPDATE of the claim and one INSERT of its events for the whole run."""
    claim = Claim.objects.select_for_update().get(pk=ctx.claim.pk)
    if claim.status not in WORKING:
        return claim  # another worker concluded it while we were checking
    claim.provider = ctx.claim.provider
    ctx.claim = claim
    now = timezone.now()
    started = claim.status == S.RECEIVED
    run = claim.verification_runs + 1 if started else max(claim.verification_runs, 1)
    steps: list[tuple[str, str, dict | None]] = []
    if started:
        steps.append((S.VERIFYING, f"verification run {run}", None))

    gave_up = _gave_up(claim, results, now)
    if gave_up:  # before billing: a correction that gave up waiting is billed like any claim
        _stop_waiting(results, claim, now)
    double = _double_billing(ctx, results, correction)
    results = _ordered(results, double)
    if gave_up:
        _stop_waiting(results, claim, now)
    outcomes = {r.outcome for r in results}
    voided = (
        correction is not None
        and correction.relationship == billing.VOIDS
        and _outcome(results, billing.RELATED) == PASS
        and not outcomes & {FAIL, WAIT}
    )

    if not started:
        ClaimCheck.objects.filter(claim=claim, run=run).delete()  # an earlier attempt of the run
    ClaimCheck.objects.bulk_create(_rows(claim, run, results, now))
    snapshot = {"run": run, "checks": {r.name: r.outcome for r in results}}
    fields: dict = {"verification_runs": run, "updated_at": now}
    if correction is not None and correction.original is not None:
        fields.update(related=correction.original, relationship=correction.relationship)

    if FAIL in outcomes:
        first = next(r for r in results if r.outcome == FAIL)
        verdict = S.REJECTED
        steps.append((verdict, first.sentence, snapshot))
    elif WAIT in outcomes:
        verdict = None
        first = next(r for r in results if r.outcome == WAIT)
        if claim.waiting_since is None:
            steps.append((S.VERIFYING, first.sentence, snapshot))
            fields["waiting_since"] = now
    else:
        verdict = S.NEEDS_REVIEW if WARN in outcomes else S.VERIFIED
        reason = next((r.sentence for r in results if r.outcome == WARN), "every check passed")
        steps.append((verdict, reason, snapshot))
    if verdict is not None:
        fields.update(verdict=verdict, waiting_since=None)
    if voided:
        reason = f"a void request: it voided claim {correction.named} and is not paid itself"
        steps.append((S.VOIDED, reason, snapshot))
    if steps:
        claim_transitions(claim=claim, steps=steps, fields=fields)
    else:  # still waiting, as the last attempt of this run was
        Claim.objects.filter(pk=claim.pk).update(**fields)
        for name, value in fields.items():
            setattr(claim, name, value)
    _adjudicate(ctx, claim.status, results)
    return claim


def _ordered(results: list[Result], double: Result | None) -> list[Result]:
    """Checks in their documented order: double_billing goes before business."""
    if double is None:
        return results
    at = next((i for i, r in enumerate(results) if r.name == business.NAME), len(results))
    return [*results[:at], double, *results[at:]]


def _outcome(results: list[Result], name: str) -> str | None:
    return next((r.outcome for r in results if r.name == name), None)


def _double_billing(ctx: Context, results: list[Result], correction) -> Result | None:
    """Reserve the billed anchors (superseding or voiding an original first), or explain why not.

    A claim failing other checks reserves nothing (it is rejected) but says whether someone else
    bills its procedures; a claim still waiting reserves them now (first come, first served), but
    a correction reserves only once verified, since it supersedes its original at that moment.
    """
    if not ctx.disclosed:
        return None
    anchors = billing.billed(ctx)
    outcomes = {r.outcome for r in results}
    name = billing.DOUBLE_BILLING
    use = ctx.validated.use if ctx.validated else "claim"
    if FAIL in outcomes:
        if taken := billing.holders(ctx.claim, anchors):
            return billing.double_billed(ctx, taken)
        return Result(name, PASS, "No other live claim bills these procedures (nothing reserved: "
                      "the claim fails other checks).")  # fmt: skip
    if correction is not None and correction.relationship == billing.VOIDS:
        if WAIT not in outcomes and _outcome(results, billing.RELATED) == PASS:
            _replace(results, billing.apply(ctx.claim, correction))
        return Result(name, PASS, "A void request bills nothing.")
    if use != "claim":
        return Result(name, PASS, f"A {use} bills nothing: its procedures stay free to bill.")
    replaces = correction is not None and correction.relationship == billing.REPLACES
    if replaces and WAIT in outcomes:
        return Result(name, WAIT, "Checked once this correction is verified: its original is "
                      "superseded at that moment.")  # fmt: skip
    if not replaces or correction.original is None:
        return billing.reserve(ctx, anchors)
    with transaction.atomic():  # supersede and reserve together, or neither
        related = billing.apply(ctx.claim, correction)
        _replace(results, related)
        double = billing.reserve(ctx, anchors) if related.outcome == PASS else None
        if double is None or double.outcome != PASS:
            transaction.set_rollback(True)
    if double is not None:
        return double
    if taken := billing.holders(ctx.claim, anchors):  # after the savepoint is rolled back
        return billing.double_billed(ctx, taken)
    return Result(name, related.outcome, "Not reserved: the original was not superseded.")


def _replace(results: list[Result], new: Result) -> None:
    for i, r in enumerate(results):
        if r.name == new.name:
            results[i] = new


def _gave_up(claim: Claim, results: list[Result], now) -> bool:
    if claim.waiting_since is None or not any(r.outcome == WAIT for r in results):
        return False
    return (now - claim.waiting_since).total_seconds() >= settings.CLAIMS_VERIFY_WAIT_MAX_S


def _stop_waiting(results: list[Result], claim: Claim, now) -> None:
    """After CLAIMS_VERIFY_WAIT_MAX_S a wait becomes a warn: an adjuster looks at it."""
    waited = int((now - claim.waiting_since).total_seconds())
    for r in results:
        if r.outcome == WAIT:
            r.outcome = WARN
            r.evidence["waited_s"] = waited
            r.sentence = f"Stopped waiting after {waited} s: {r.sentence}"


def _rows(claim: Claim, run: int, results: list[Result], now) -> list[ClaimCheck]:
    return [
        ClaimCheck(claim=claim, run=run, name=r.name, outcome=r.outcome, sentence=r.sentence,
                   evidence=r.evidence, checked_at=now)
        for r in results
    ]  # fmt: skip


# One statement for every item of a claim (PostgreSQL, and SQLite from 3.33): no read first.
_ADJUDICATE_SQL = """
UPDATE claims_claimitem SET
    procedure_url = v.column2,
    adjudication = v.column3,
    reason_code = v.column4,
    eligible = CASE WHEN v.column3 = 'denied' THEN 0 ELSE claims_claimitem.submitted END,
    benefit = CASE v.column3 WHEN 'approved' THEN claims_claimitem.submitted
                             WHEN 'denied' THEN 0 END
FROM (VALUES {values}) AS v
WHERE claims_claimitem.claim_id = %s AND claims_claimitem.sequence = CAST(v.column1 AS INTEGER)
"""


def _adjudicate(ctx: Context, status: str, results: list[Result]) -> None:
    """Line-level answer: approved when verified, denied when rejected (with the failed
    Procedure's reason, else the failed check's) or a void request, pending otherwise (an
    adjuster decides). Eligible is the submitted amount unless denied; benefit is paid only
    when approved."""
    failed = next((r.name for r in results if r.outcome == FAIL), "")
    verdict = {S.VERIFIED: "approved", S.REJECTED: "denied", S.VOIDED: "denied"}.get(
        status, "pending"
    )
    params: list = []
    for sequence, urls in ctx.item_procedures.items():
        reason = ""
        if status == S.VOIDED:
            reason = "void-request"
        elif status == S.REJECTED:
            reasons = [ctx.procedure_failures[u] for u in urls if u in ctx.procedure_failures]
            reason = reasons[0] if reasons else f"rejected:{failed}"[:50]
        params += [str(sequence), urls[0][:300] if urls else "", verdict, reason]
    if not params:  # the items could not be read (invalid FHIR): the same answer for all
        denied = verdict == "denied"
        ClaimItem.objects.filter(claim=ctx.claim).update(
            adjudication=verdict,
            reason_code=f"rejected:{failed}"[:50] if denied else "",
            eligible=Decimal(0) if denied else F("submitted"),
            benefit=Decimal(0) if denied else None,
        )
        return
    values = ", ".join(["(%s, %s, %s, %s)"] * (len(params) // 4))
    with connection.cursor() as cursor:
        cursor.execute(_ADJUDICATE_SQL.format(values=values), [*params, ctx.claim.pk])
