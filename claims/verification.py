"""Verifying a claim: run every check, record each with its evidence, move the claim.

``claim_verify`` is what the Celery task calls. It is idempotent: a claim that is not
``received`` or ``verifying`` is left alone, so a redelivered message is a no-op. The checks that
only read run first, without a lock; then one transaction locks the claim row, reserves the
anchors (double billing), supersedes or voids an original, replaces this run's check rows and
moves the claim (every step of the run in one UPDATE, ``claim_transitions_many``). Two workers on
one claim serialise on the row lock and the second finds it done. A batch
(``claim_verify_many``) moves all its claims in one ``claim_transitions_many``.

A run is numbered (``Claim.verification_runs``): received -> verifying starts run 1, and
``claim_reverify`` (batch jobs) starts the next. While a run waits for a final checkpoint, each
attempt rewrites that run's rows: a run never has two rows for one check. docs/verification.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from claims import disclosure, fhir_validation
from claims.checks import (
    FAIL,
    PASS,
    WAIT,
    WARN,
    Context,
    Prefetched,
    Result,
    billing,
    binding,
    business,
)
from claims.checks import fhir as fhir_check
from claims.checks import ledger as ledger_check
from claims.checks import signature as signature_check
from claims.models import Claim, ClaimCheck, ClaimItem
from claims.states import (
    LIVE,
    ClaimStatus,
    ConcurrentTransition,
    InvalidTransition,
    Move,
    claim_transition,
    claim_transitions_many,
)
from config.bulk import insert_rows
from review.reasons import DENIAL_REASONS

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


def claim_verify_many(
    *, claim_ids: Iterable[int] = (), pull: int = 0, skip: Iterable[int] = ()
) -> list[Claim]:
    """Verify many claims in one transaction, with the reads and writes of each table made
    once for the whole batch; return the claims it verified, as they now stand.

    ``claim_ids`` are verified when they are ``received`` or ``verifying``; ``pull`` adds up to
    that many other ``received`` claims, oldest first (a worker taking what intake queued), but
    those in ``skip``.
    Claims another worker has locked are skipped (it is verifying them): the answer may hold
    fewer claims than asked. Every claim is checked and concluded exactly as
    :func:`claim_verify` would (same checks, rows, steps and verdicts); a claim still
    ``verifying`` afterwards waits for a final checkpoint, and its caller should try it again
    later (``claim_verify_task`` with backoff). Statements per batch: about sixteen, whatever
    its size (one claim per statement only for corrections and voids, which supersede or void
    their original one at a time).
    """
    ids = list(dict.fromkeys(claim_ids))
    with transaction.atomic():
        locked = (
            Claim.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("provider__member")
            .order_by("pk")
        )
        claims = list(locked.filter(pk__in=ids, status__in=WORKING)) if ids else []
        if pull > 0:
            claims += (
                locked.filter(status=S.RECEIVED)
                .exclude(pk__in=[*ids, *skip])
                .order_by("created_at", "pk")[:pull]
            )
        if not claims:
            return []
        _verify_locked(claims)
    return claims


def _verify_locked(claims: list[Claim]) -> None:
    """The batch: parse every claim, read what they all need at once, run the checks, reserve
    every clean claim's anchors in one statement, conclude each, write each table once."""
    contexts = [Context(claim) for claim in claims]
    unreadable = [_prepare(ctx) for ctx in contexts]
    pre = Prefetched()
    kids = list({claim.kid for claim in claims})
    keys = signature_check.key_values(kids)
    pre.keys = {kid: keys.get(kid) for kid in kids}
    pre.leaves, pre.head, pre.target, pre.paths = ledger_check.prefetch(
        [d for ctx in contexts for d in ctx.disclosed]
    )
    for ctx in contexts:
        ctx.prefetched = pre
    firsts = [_first_checks(ctx, u) for ctx, u in zip(contexts, unreadable, strict=True)]
    pre.fees = business.fee_schedule(
        {(c.system, c.code, item.unit_price.currency)
         for ctx in contexts if ctx.validated is not None
         for item, c in business.priced(ctx.validated)}
    )  # fmt: skip
    done = []
    for ctx, (results, correction) in zip(contexts, firsts, strict=True):
        done.append((ctx, _last_checks(ctx, results, correction), correction))

    # Claims that would reserve their anchors plainly (no failure, no correction, a claim):
    # one statement for all of them; on any conflict, each reserves on its own as alone.
    plain = [(ctx, billing.billed(ctx)) for ctx, results, correction in done
             if ctx.disclosed and correction is None and not _fails(results)
             and (ctx.validated is None or ctx.validated.use == "claim")]  # fmt: skip
    if billing.reserve_many([(ctx.claim, anchors) for ctx, anchors in plain]):
        for ctx, anchors in plain:
            ctx.reservation = billing.reserved(anchors)
    writes = _Writes()
    for ctx, results, correction in done:
        _settle(ctx, results, correction, writes)
    writes.flush()


def _fails(results: list[Result]) -> bool:
    return any(r.outcome == FAIL for r in results)


def claim_reverify(*, claim_id: int, actor=None, reason: str = "re-verification") -> Claim:
    """Start a new verification run of a concluded claim and queue it once committed. Raises
    ``InvalidTransition`` from states that cannot, and for an approved claim: only a batch job
    re-verifies one, since its payout is voided or kept with the verdict (jobs.services)."""
    with transaction.atomic():
        claim = Claim.objects.select_for_update().get(pk=claim_id)
        if claim.status == S.APPROVED:  # its payout decides with it: a batch job's business
            raise InvalidTransition(claim.status, S.VERIFYING)
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


def _prepare(ctx: Context) -> Result | None:
    """Parse the stored body and its disclosures into ``ctx``; a failure to read them is the
    ``procedures`` result (None when they read)."""
    try:  # floats, as the provider's EHR committed them; intake refused anything odd
        ctx.bundle = json.loads(bytes(ctx.claim.body))
    except ValueError:
        ctx.bundle = None
    try:
        ctx.disclosed = disclosure.disclosed_procedures(ctx.bundle or {})
    except disclosure.DisclosureError as exc:
        return Result("procedures", FAIL, f"The disclosures cannot be read: {exc}.")
    return None


def _read_checks(ctx: Context) -> tuple[list[Result], billing.Correction | None]:
    results, correction = _first_checks(ctx, _prepare(ctx))
    return _last_checks(ctx, results, correction), correction


def _first_checks(
    ctx: Context, unreadable: Result | None
) -> tuple[list[Result], billing.Correction | None]:
    """Every check that only reads, but the business rules (a batch reads its fee schedule
    once it knows every claim's items)."""
    results = [signature_check.check(ctx), _fhir(ctx)]
    if unreadable is not None:
        results.append(unreadable)
    results += ledger_check.check(ctx)
    if (bound := binding.check(ctx)) is not None:
        results.append(bound)
    related, correction = billing.correction(ctx)
    if related is not None:
        results.append(related)
    return results, correction


def _fhir(ctx: Context) -> Result:
    """The ``fhir`` check. Every run trusts intake's validation when intake applied the rules in
    force now (``Claim.fhir_rules``; ``RULES_VERSION`` is raised with any change of rules or of
    fhir.resources, tests/claims/test_verification.py pins it): the stored bytes never change,
    so validating them again under the same rules gives the same answer. The Bundle's views are
    then built without the R4B models, and the totals and internal references are checked as
    always. A claim accepted under other rules is validated in full."""
    claim = ctx.claim
    with fhir_validation.trusting_intake(claim.fhir_rules):
        result = fhir_check.check(ctx)
    if ctx.validated is not None and ctx.validated.intake_rules:
        said = f"validated at intake under rules v{ctx.validated.intake_rules}"
        result.evidence["fhir_validation"] = said
        if result.sentence.startswith("Valid FHIR R4;"):
            result.sentence = result.sentence.replace("Valid FHIR R4;", f"Valid FHIR R4 ({said});")
    return result


def _last_checks(ctx: Context, results: list[Result], correction) -> list[Result]:
    void = correction is not None and correction.relationship == billing.VOIDS
    if (flagged := business.check(ctx, void=void)) is not None:
        results.append(flagged)
    return results


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
    writes = _Writes()
    _settle(ctx, results, correction, writes)
    writes.flush()
    return claim


@dataclass
class _Writes:
    """The rows verification runs write, gathered so that a batch writes each table once: the
    claims move (``claim_transitions_many``), the earlier attempt's check rows go, the new ones
    come, the items are adjudicated."""

    moves: list[Move] = field(default_factory=list)
    releases: bool = False  # a pending move takes a claim out of a live state
    reruns: list[tuple[int, int]] = field(default_factory=list)  # (claim, run) to clear
    checks: list[tuple] = field(default_factory=list)  # _CHECK_COLUMNS
    items: list[tuple] = field(default_factory=list)  # claim, sequence, url, verdict, reason

    def flush_moves(self) -> None:
        """Move the claims now. Every claim of a batch is locked: a claim that did not move is
        a bug (or a correction that superseded its original in the batch), and the batch fails
        as a lost compare-and-set fails a single run."""
        moves, self.moves, self.releases = self.moves, [], False
        if lost := claim_transitions_many(moves):
            raise ConcurrentTransition(f"claims {[c.pk for c in lost]} moved during verification")

    def flush(self) -> None:
        self.flush_moves()
        if self.reruns:
            where = Q()
            for claim_id, run in self.reruns:
                where |= Q(claim_id=claim_id, run=run)
            ClaimCheck.objects.filter(where).delete()
        insert_rows(ClaimCheck, _CHECK_COLUMNS, self.checks)
        if self.items:
            _adjudicate_items(self.items)
        self.reruns, self.checks, self.items = [], [], []


_CHECK_COLUMNS = ("claim_id", "run", "name", "outcome", "sentence", "evidence", "checked_at")


def _settle(ctx: Context, results: list[Result], correction, writes: _Writes) -> None:
    """Conclude the locked ``ctx.claim``: reserve its anchors (or supersede or void its
    original), move it through its run's steps and gather its rows into ``writes``."""
    claim = ctx.claim
    now = timezone.now()
    started = claim.status == S.RECEIVED
    run = claim.verification_runs + 1 if started else max(claim.verification_runs, 1)
    steps: list[tuple[str, str, dict | None]] = []
    if started:
        steps.append((S.VERIFYING, f"verification run {run}", None))

    gave_up = _gave_up(claim, results, now)
    if gave_up:  # before billing: a correction that gave up waiting is billed like any claim
        _stop_waiting(results, claim, now)
    if writes.moves and (writes.releases or correction is not None):
        # Billing must see the batch's earlier claims as they now stand: the anchors they
        # release, an original they concluded (rare: re-verifications, corrections).
        writes.flush_moves()
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
        writes.reruns.append((claim.pk, run))  # an earlier attempt of the run
    writes.checks += _rows(claim, run, results, now)
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
    # No steps: still waiting, as the last attempt of this run was (only the fields change).
    writes.moves.append((claim, steps, fields))
    at = claim.status
    for to, _, _ in steps:
        writes.releases |= at in LIVE and to not in LIVE
        at = to
    _adjudicate(ctx, at, results, writes)


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
        return ctx.reservation or billing.reserve(ctx, anchors)
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


def _rows(claim: Claim, run: int, results: list[Result], now) -> list[tuple]:
    return [(claim.pk, run, r.name, r.outcome, r.sentence, r.evidence, now) for r in results]


# One statement for every item of every claim of a batch: on PostgreSQL five array parameters
# (config/bulk.py says why), on SQLite (from 3.33) a VALUES list.
_ADJUDICATE_SQL = """
UPDATE claims_claimitem SET
    procedure_url = v.column3,
    adjudication = v.column4,
    reason_code = v.column5,
    eligible = CASE WHEN v.column4 = 'denied' THEN 0 ELSE claims_claimitem.submitted END,
    benefit = CASE v.column4 WHEN 'approved' THEN claims_claimitem.submitted
                             WHEN 'denied' THEN 0 END
FROM {source}
WHERE claims_claimitem.claim_id = CAST(v.column1 AS BIGINT)
  AND claims_claimitem.sequence = CAST(v.column2 AS INTEGER)
  AND NOT (v.column4 <> 'denied'
           AND claims_claimitem.adjudication IN ('adjusted', 'denied')
           AND claims_claimitem.reason_code IN ({adjuster_codes}))
"""
_UNNEST_ITEMS = (
    "unnest(%s::bigint[], %s::integer[], %s::text[], %s::text[], %s::text[]) "
    "AS v(column1, column2, column3, column4, column5)"
)


def _adjudicate_items(items: list[tuple]) -> None:
    """Write each item's line-level answer: (claim id, sequence, url, verdict, reason)."""
    codes = ", ".join(["%s"] * len(_ADJUSTER_CODES))
    if connection.vendor == "postgresql":
        source, params = _UNNEST_ITEMS, [list(column) for column in zip(*items, strict=True)]
    else:
        source = f"(VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(items))}) AS v"
        params = [value for item in items for value in item]
    sql = _ADJUDICATE_SQL.format(source=source, adjuster_codes=codes)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *_ADJUSTER_CODES])


# An adjuster's adjustment or denial of a line (with a CARC reason code) survives a
# re-verification that does not reject the claim: only a failed check overrides it.
_ADJUSTER_CODES = sorted(DENIAL_REASONS)


def _adjudicate(ctx: Context, status: str, results: list[Result], writes: _Writes) -> None:
    """Line-level answer: approved when verified, denied when rejected (with the failed
    Procedure's reason, else the failed check's) or a void request, pending otherwise (an
    adjuster decides). Eligible is the submitted amount unless denied; benefit is paid only
    when approved."""
    failed = next((r.name for r in results if r.outcome == FAIL), "")
    verdict = {S.VERIFIED: "approved", S.REJECTED: "denied", S.VOIDED: "denied"}.get(
        status, "pending"
    )
    params: list[tuple] = []
    for sequence, urls in ctx.item_procedures.items():
        reason = ""
        if status == S.VOIDED:
            reason = "void-request"
        elif status == S.REJECTED:
            reasons = [ctx.procedure_failures[u] for u in urls if u in ctx.procedure_failures]
            reason = reasons[0] if reasons else f"rejected:{failed}"[:50]
        params.append((ctx.claim.pk, sequence, urls[0][:300] if urls else "", verdict, reason))
    if not params:  # the items could not be read (invalid FHIR): the same answer for all
        denied = verdict == "denied"
        ClaimItem.objects.filter(claim=ctx.claim).update(
            adjudication=verdict,
            reason_code=f"rejected:{failed}"[:50] if denied else "",
            eligible=Decimal(0) if denied else F("submitted"),
            benefit=Decimal(0) if denied else None,
        )
        return
    writes.items += params
