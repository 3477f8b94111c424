"""Every write of payment runs: start, collect, settle a chunk, finish; progress and exports.

* ``payment_run_start`` records a planned run for a period (the unique constraint on ``period``
  turns a second one into ``Conflict``) and queues ``payment_run_task`` once committed.
* ``payment_run_collect`` takes the period's unsettled payouts of approved claims in keyset
  chunks (``id > last ORDER BY id LIMIT size``). Each chunk is one transaction under the run's
  row lock: the chunk row, one ``PaymentRunItem`` per payout (one-to-one: a payout concurrently
  taken by another run makes the insert fail and the chunk is collected again without it), and
  the run's counters. A redelivered collector resumes after the last chunk.
* ``payment_chunk_settle`` settles a chunk in ONE transaction that locks the chunk row first:
  payouts get ``settled_at``, claims move approved -> paid through ``claims.states``, the chunk
  moves to done and its counts are added to the run with ``F()``. A worker killed half way rolls
  everything back; a redelivered chunk finds it done and does nothing. No double settlement.

docs/payments.md.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from audit.services import audit_record
from claims.models import Claim, Provider, ProviderKey
from claims.states import ClaimStatus, ConcurrentTransition, InvalidTransition, claim_transition
from config.errors import Conflict, NotFound, Unprocessable
from payments.models import PaymentChunk, PaymentRun, PaymentRunItem, PaymentRunTotal
from review.models import Payout

log = logging.getLogger(__name__)
P = PaymentRun.Status
CENT = Decimal("0.01")
FINISHED = frozenset({P.SETTLED, P.FAILED})
PAYOUT_SYSTEM = "https://claimproof.example/fhir/NamingSystem/payout"
RUN_SYSTEM = "https://claimproof.example/fhir/NamingSystem/payment-run"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"


def chunk_size() -> int:
    return max(1, int(getattr(settings, "PAYMENTS_CHUNK_SIZE", 200)))


def _target(run: PaymentRun) -> str:
    return f"payment_run:{run.pk}"


# --- period ------------------------------------------------------------------------------------


def period_clean(value: date | str | None) -> date:
    """The period key: a UTC day (``YYYY-MM-DD``), today by default, never in the future."""
    today = timezone.now().astimezone(UTC).date()
    if value in (None, ""):
        return today
    if isinstance(value, datetime):
        raise Unprocessable("a period is a day, YYYY-MM-DD", code="bad_period")
    if not isinstance(value, date):
        try:
            value = date.fromisoformat(str(value).strip())
        except ValueError:
            raise Unprocessable(
                f"{str(value)[:40]!r} is not a day: say YYYY-MM-DD", code="bad_period"
            ) from None
    if value > today:
        raise Unprocessable(
            f"the period {value} has not begun: a run pays what was approved up to its day",
            code="future_period",
        )
    return value


def period_end(period: date) -> datetime:
    """The first instant after the period (UTC): payouts created before it belong to it."""
    return datetime.combine(period + timedelta(days=1), time.min, tzinfo=UTC)


def payable(period: date) -> QuerySet[Payout]:
    """Payouts a run for ``period`` takes: unsettled, not voided, of approved claims, created
    (approved) up to the end of the period, in no run yet (or only in runs that could not pay
    them before they were voided and approved again)."""
    in_a_run = PaymentRunItem.objects.filter(payout=OuterRef("pk"), released_at__isnull=True)
    return Payout.objects.filter(
        ~Exists(in_a_run),
        settled_at__isnull=True,
        voided_at__isnull=True,
        claim__status=ClaimStatus.APPROVED,
        created_at__lt=period_end(period),
    )


# --- starting, collecting ----------------------------------------------------------------------


def payment_run_start(period: date | str | None, user=None, *, reason: str = "") -> PaymentRun:
    """Record a planned run for ``period`` and queue its collection once committed.
    Raises ``Conflict`` (409) when the period already has a run, ``Unprocessable`` on a bad
    period."""
    period = period_clean(period)
    actor = user if getattr(user, "is_authenticated", False) else None
    try:
        with transaction.atomic():
            run = PaymentRun.objects.create(period=period, reason=reason[:300], created_by=actor)
            audit_record(
                actor=actor,
                action="payment_run.start",
                target=_target(run),
                why=reason,
                data={"period": period.isoformat()},
            )
            transaction.on_commit(lambda: _enqueue_run(run.pk))
    except IntegrityError:
        other = PaymentRun.objects.filter(period=period).first()
        where = f" (run {other.pk}, {other.status})" if other else ""
        raise Conflict(
            f"the period {period} already has a payment run{where}: a period is paid once",
            code="payment_run_exists",
            extra={"run": other.pk} if other else None,
        ) from None
    return run


def payment_run_collect(
    run_id: int, *, dispatch: Callable[[int], None] | None = None
) -> PaymentRun:
    """Collect the run's payouts into chunks and hand each, once committed, to ``dispatch``
    (default: queue ``payment_chunk_task``). Idempotent: a second call re-dispatches the pending
    chunks and resumes after the last one collected."""
    dispatch = dispatch or _enqueue_chunk
    now = timezone.now()
    PaymentRun.objects.filter(pk=run_id, status=P.PLANNED).update(
        status=P.RUNNING, started_at=now, updated_at=now
    )
    run = PaymentRun.objects.get(pk=run_id)
    if run.status != P.RUNNING or run.collected:
        return run
    pending = PaymentChunk.objects.filter(run=run, status=PaymentChunk.Status.PENDING)
    for chunk_id in pending.order_by("number").values_list("pk", flat=True).iterator():
        dispatch(chunk_id)
    conflicts = 0
    while True:
        try:
            chunk_id = _collect_one(run_id)
        except IntegrityError:  # another run took one of these payouts first: collect again
            conflicts += 1
            if conflicts > 20:
                raise
            continue
        if chunk_id is None:
            break
        dispatch(chunk_id)
    return _finish_if_complete(run_id)


def _collect_one(run_id: int) -> int | None:
    """One chunk, in one transaction under the run's row lock (two collectors of the same run
    take turns and each continues from the real tail). None when nothing is left."""
    with transaction.atomic():
        run = PaymentRun.objects.select_for_update().get(pk=run_id)
        if run.status != P.RUNNING or run.collected:
            return None
        tail = PaymentChunk.objects.filter(run=run).order_by("-number").first()
        last, number = (tail.last_id, tail.number + 1) if tail else (0, 0)
        # Locked: a batch job voiding one of them right now is waited for, and the row is
        # then read again (a voided payout drops out instead of entering the run).
        rows = list(
            payable(run.period)
            .filter(id__gt=last)
            .order_by("id")
            .select_for_update(of=("self",))
            .values_list("id", "amount", "currency")[: chunk_size()]
        )
        now = timezone.now()
        if not rows:
            PaymentRun.objects.filter(pk=run_id).update(collected=True, updated_at=now)
            return None
        chunk = PaymentChunk.objects.create(
            run=run, number=number, first_id=rows[0][0], last_id=rows[-1][0], size=len(rows)
        )
        PaymentRunItem.objects.bulk_create(
            PaymentRunItem(run=run, chunk=chunk, payout_id=pk, amount=amount, currency=currency)
            for pk, amount, currency in rows
        )
        sums: dict[str, list] = defaultdict(lambda: [0, Decimal("0.00")])
        for _, amount, currency in rows:
            sums[currency][0] += 1
            sums[currency][1] += amount
        for currency, (count, amount) in sums.items():
            PaymentRunTotal.objects.get_or_create(run=run, currency=currency)
            PaymentRunTotal.objects.filter(run=run, currency=currency).update(
                payouts=F("payouts") + count, amount=F("amount") + amount
            )
        PaymentRun.objects.filter(pk=run_id).update(
            total=F("total") + len(rows), chunks=F("chunks") + 1, updated_at=now
        )
        return chunk.pk


def _enqueue_run(run_id: int) -> None:
    """Queue the collection. The run row is committed: if the broker is away, the sweeper
    (``payments_sweep_task``) queues it later."""
    from payments.tasks import payment_run_task

    try:
        payment_run_task.delay(run_id)
    except Exception:  # any broker failure: the database is the to-do list
        log.warning("could not queue payment run %s; the sweeper will", run_id)


def _enqueue_chunk(chunk_id: int) -> None:
    from payments.tasks import payment_chunk_task

    try:
        payment_chunk_task.delay(chunk_id)
    except Exception:
        log.warning("could not queue payment chunk %s; the sweeper will", chunk_id)


# --- settling ----------------------------------------------------------------------------------


def payment_chunk_settle(chunk_id: int) -> PaymentChunk:
    """Settle a chunk's payouts and move their claims to paid, all in one transaction; a chunk
    already done is left alone (a redelivered task settles nothing twice)."""
    PaymentChunk.objects.filter(pk=chunk_id, status=PaymentChunk.Status.PENDING).update(
        attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    with transaction.atomic():
        chunk = (
            PaymentChunk.objects.select_for_update(of=("self",))
            .select_related("run", "run__created_by")
            .get(pk=chunk_id)
        )
        run = chunk.run
        if chunk.status == PaymentChunk.Status.DONE or run.status != P.RUNNING:
            return chunk
        items = list(
            PaymentRunItem.objects.filter(chunk=chunk)
            .select_related("payout")
            .order_by("payout_id")
        )
        claim_ids = sorted(item.payout.claim_id for item in items)
        claims = {c.pk: c for c in Claim.objects.select_for_update().filter(pk__in=claim_ids)}
        # Read after the claims' locks: a batch job voids a payout (and releases its items)
        # under its claim's lock. A released item is never paid, even if the payout was
        # approved again since (with another amount): a later run takes it.
        voided = {
            pk: reason or "its approval was withdrawn"
            for pk, reason in PaymentRunItem.objects.filter(pk__in=[i.pk for i in items])
            .filter(Q(released_at__isnull=False) | Q(payout__voided_at__isnull=False))
            .values_list("pk", "payout__void_reason")
        }
        revoked = _revoked_keys({c.kid for c in claims.values()})
        now = timezone.now()
        settled: dict[str, list] = defaultdict(lambda: [0, Decimal("0.00")])
        paid: list[PaymentRunItem] = []
        failed: list[PaymentRunItem] = []
        for item in items:
            claim = claims.get(item.payout.claim_id)
            if problem := _voided(item, voided) or _amount_changed(item):
                # released: the payout, approved again, is a later run's to pay
                item.error, item.released_at = problem, item.released_at or now
                failed.append(item)
                continue
            if problem := _key_revoked(claim, revoked) or _settle_one(run, item, claim):
                item.error = problem
                failed.append(item)
                continue
            paid.append(item)
            settled[item.currency][0] += 1
            settled[item.currency][1] += item.amount
        Payout.objects.filter(pk__in=[i.payout_id for i in paid]).update(settled_at=now)
        PaymentRunItem.objects.filter(pk__in=[i.pk for i in paid]).update(settled_at=now)
        if failed:
            PaymentRunItem.objects.bulk_update(failed, ["error", "released_at"])
        PaymentChunk.objects.filter(pk=chunk.pk).update(
            status=PaymentChunk.Status.DONE, finished_at=now, updated_at=now
        )
        for currency, (count, amount) in settled.items():
            PaymentRunTotal.objects.filter(run=run, currency=currency).update(
                settled_payouts=F("settled_payouts") + count,
                settled_amount=F("settled_amount") + amount,
            )
        PaymentRun.objects.filter(pk=run.pk).update(
            settled=F("settled") + sum(n for n, _ in settled.values()),
            errors=F("errors") + len(failed),
            chunks_done=F("chunks_done") + 1,
            updated_at=now,
        )
    _finish_if_complete(run.pk)
    chunk.refresh_from_db()
    return chunk


def _amount_changed(item: PaymentRunItem) -> str:
    """The last guard: a run pays the amount it took, and only while the payout still says so."""
    if item.amount != item.payout.amount or item.currency != item.payout.currency:
        return (
            f"the payout is now {item.payout.amount} {item.payout.currency}, not the "
            f"{item.amount} {item.currency} this run took: a later run pays it"
        )
    return ""


def _voided(item: PaymentRunItem, voided: dict[int, str]) -> str:
    if item.pk not in voided:
        return ""
    return f"payout {item.payout.reference} was voided after this run took it: {voided[item.pk]}"


def _revoked_keys(kids: set[str]) -> dict[str, tuple[datetime, str]]:
    rows = ProviderKey.objects.filter(kid__in=kids, revoked_at__isnull=False)
    return {
        k: (at, why) for k, at, why in rows.values_list("kid", "revoked_at", "revocation_reason")
    }


def _key_revoked(claim: Claim | None, revoked: dict[str, tuple[datetime, str]]) -> str:
    """A key revoked from a time before the claim was received (a backdated revocation, e.g. a
    key stolen earlier) makes the signature invalid: the approval no longer stands, so the payout
    is held for a person, not paid. The revoked-key job sends the claim back to the adjusters."""
    if claim is None or claim.kid not in revoked:
        return ""
    at, why = revoked[claim.kid]
    if at > claim.created_at:
        return ""  # signed before the revocation: still valid
    return (
        f"claim {claim.public_id} was signed with key {claim.kid}, revoked from "
        f"{at:%Y-%m-%d %H:%M} "
        f"UTC ({why}), before the claim was received: not paid"
    )


def _settle_one(run: PaymentRun, item: PaymentRunItem, claim: Claim | None) -> str:
    """Move one payout's claim to paid inside the chunk's transaction; the reason when it
    cannot be (empty when it was)."""
    payout = item.payout
    if payout.settled_at is not None:
        return f"payout {payout.reference} was already settled at {payout.settled_at:%Y-%m-%d}"
    if claim is None:
        return f"the claim of payout {payout.reference} is gone"
    try:
        claim_transition(
            claim=claim,
            to=ClaimStatus.PAID,
            actor=run.created_by,
            reason=f"payment run {run.pk} ({run.period}): payout {payout.reference}",
        )
    except (InvalidTransition, ConcurrentTransition) as exc:
        return f"claim {claim.public_id} cannot be paid: {exc}"
    return ""  # the caller marks the chunk's paid payouts settled in one UPDATE


def _finish_if_complete(run_id: int) -> PaymentRun:
    """Settled when every chunk is done and every payout was paid; failed when some could not
    be (they stay in this run, unsettled, for a person to look at)."""
    with transaction.atomic():
        run = PaymentRun.objects.select_for_update().get(pk=run_id)
        if not (run.status == P.RUNNING and run.collected and run.chunks_done >= run.chunks):
            return run
        run.status = P.FAILED if run.errors else P.SETTLED
        run.finished_at = timezone.now()
        if run.errors:
            run.error = f"{run.errors} of {run.total} payouts could not be settled"
        run.save(update_fields=["status", "finished_at", "error", "updated_at"])
        audit_record(
            actor=None,
            action=f"payment_run.{run.status}",
            target=_target(run),
            why=run.error,
            data={
                "period": run.period.isoformat(),
                "payouts": run.total,
                "settled": run.settled,
                "totals": {t.currency: str(t.settled_amount) for t in run.totals.all()},
            },
        )
    return run


def payments_to_sweep(*, older_than_s: int) -> tuple[list[int], list[int]]:
    """Runs whose collection, and chunks whose task, look lost: nothing written for a while.
    Every pending chunk of a stalled run at once (up to 10,000), as for jobs: after a broker
    restarted empty, a run must not stall again after each handful."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    runs = list(
        PaymentRun.objects.filter(
            status__in=[P.PLANNED, P.RUNNING], collected=False, updated_at__lt=cutoff
        ).values_list("pk", flat=True)[:100]
    )
    chunks = list(
        PaymentChunk.objects.filter(
            status=PaymentChunk.Status.PENDING,
            run__status=P.RUNNING,
            run__updated_at__lt=cutoff,
            updated_at__lt=cutoff,
        ).values_list("pk", flat=True)[:10_000]
    )
    return runs, chunks


# --- reading -----------------------------------------------------------------------------------


def payment_run_get(run_id: int) -> PaymentRun:
    run = PaymentRun.objects.select_related("created_by").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"no payment run {run_id}", code="unknown_payment_run")
    return run


def payment_progress(run: PaymentRun, *, now: datetime | None = None) -> dict:
    """Counters, percent, rate (payouts per second since the run started), ETA in seconds (None
    until known) and totals per currency, as ``jobs.services.job_progress`` does for jobs."""
    now = now or timezone.now()
    end = run.finished_at or now
    elapsed = (end - run.started_at).total_seconds() if run.started_at else 0.0
    done = run.settled + run.errors
    rate = done / elapsed if elapsed > 0 and done else 0.0
    eta = None
    if run.status in FINISHED:
        eta = 0.0
    elif rate > 0 and run.collected:
        eta = max(run.total - done, 0) / rate
    return {
        "id": run.pk,
        "period": run.period,
        "status": run.status,
        "reason": run.reason,
        "collected": run.collected,
        "planned": run.collected,
        "chunks": run.chunks,
        "chunks_done": run.chunks_done,
        "total": run.total,
        "done": done,
        "settled": run.settled,
        "errors": run.errors,
        "error": run.error,
        "percent": round(100.0 * done / run.total, 1) if run.total else 0.0,
        "rate_per_s": round(rate, 2),
        "eta_s": None if eta is None else round(eta, 1),
        "elapsed_s": round(elapsed, 1),
        "totals": [
            {
                "currency": t.currency,
                "payouts": t.payouts,
                "amount": t.amount,
                "settled_payouts": t.settled_payouts,
                "settled_amount": t.settled_amount,
            }
            for t in sorted(run.totals.all(), key=lambda t: t.currency)
        ],
        "created_by": getattr(run.created_by, "username", None),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


REMITTANCE_HEADER = [
    "provider",
    "provider_id",
    "claim",
    "provider_reference",
    "payout_reference",
    "amount",
    "currency",
    "settled_at",
]


def remittance_rows(run: PaymentRun) -> Iterator[list]:
    """The run's remittance, one row per payout (header first), by provider, streamed."""
    yield REMITTANCE_HEADER
    rows = (
        PaymentRunItem.objects.filter(run=run)
        .order_by("payout__payee__name", "payout__payee_id", "payout_id")
        .values_list(
            "payout__payee__name",
            "payout__payee_id",
            "payout__claim__public_id",
            "payout__claim__provider_reference",
            "payout__reference",
            "amount",
            "currency",
            "settled_at",
        )
    )
    for name, pid, claim, ref, payout, amount, currency, at in rows.iterator(2000):
        settled = at.isoformat() if at else ""
        yield [name, pid, str(claim), ref, payout, f"{amount:.2f}", currency, settled]


def run_providers(run: PaymentRun) -> list[dict]:
    """Each provider paid by the run with its settled count and amount per currency."""
    rows = (
        PaymentRunItem.objects.filter(run=run, settled_at__isnull=False)
        .values("payout__payee_id", "payout__payee__name", "currency")
        .annotate(amount=Sum("amount"), payouts=Count("pk"))
        .order_by("payout__payee__name", "currency")
    )
    return [
        {
            "id": r["payout__payee_id"],
            "name": r["payout__payee__name"],
            "currency": r["currency"],
            "payouts": r["payouts"],
            "amount": r["amount"],
        }
        for r in rows
    ]


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def payment_reconciliation(run: PaymentRun, provider_id: int, currency: str = "") -> dict:
    """The FHIR R4 ``PaymentReconciliation`` telling one provider what the run paid it, one
    ``detail`` per payout with its Claim as ``request``. Amounts are ``Decimal`` (exact, two
    decimals): write them with ``claims.api.fhir_response``. One resource holds one currency:
    ``currency`` is needed when the provider was paid in several."""
    if run.status not in FINISHED:
        raise Conflict(
            f"payment run {run.pk} is {run.status}: its remittance exists once it is settled",
            code="payment_run_unsettled",
        )
    provider = Provider.objects.select_related("member").filter(pk=provider_id).first()
    if provider is None:
        raise NotFound(f"no provider {provider_id}", code="unknown_provider")
    items = PaymentRunItem.objects.filter(run=run, payout__payee=provider, settled_at__isnull=False)
    currencies = sorted(set(items.values_list("currency", flat=True)))
    if not currencies:
        raise NotFound(f"payment run {run.pk} paid nothing to {provider.name}", code="not_paid")
    if currency:
        currency = currency.upper()
        if currency not in currencies:
            raise NotFound(
                f"payment run {run.pk} paid {provider.name} nothing in {currency}", code="not_paid"
            )
    elif len(currencies) > 1:
        raise Unprocessable(
            f"payment run {run.pk} paid {provider.name} in {', '.join(currencies)}: "
            "say which currency (?currency=...)",
            code="currency_required",
        )
    else:
        currency = currencies[0]
    rows = list(
        items.filter(currency=currency)
        .order_by("payout_id")
        .values_list("payout__reference", "payout__claim__public_id", "amount", "settled_at")
    )
    unsettled = PaymentRunItem.objects.filter(
        run=run, payout__payee=provider, currency=currency, settled_at__isnull=True
    ).count()
    payee = {"reference": f"Organization/{provider.member.name}", "display": provider.name}
    total = sum((amount for _, _, amount, _ in rows), Decimal("0.00")).quantize(CENT)
    finished = run.finished_at or timezone.now()
    key = f"{run.pk}-{provider.pk}-{currency}"
    return {
        "resourceType": "PaymentReconciliation",
        "id": f"payrun-{key}".lower(),
        "identifier": [{"system": RUN_SYSTEM, "value": key}],
        "status": "active",
        "period": {"end": run.period.isoformat()},
        "created": _instant(finished),
        "paymentIssuer": {"display": getattr(settings, "PAYMENTS_PAYER_NAME", "ClaimProof")},
        "outcome": "partial" if unsettled else "complete",
        "disposition": (
            f"Payment run {run.pk} for {run.period}: {len(rows)} payouts to {provider.name}"
            + (f"; {unsettled} could not be settled." if unsettled else ".")
        ),
        "paymentDate": finished.astimezone(UTC).date().isoformat(),
        "paymentAmount": {"value": total, "currency": currency},
        "paymentIdentifier": {"system": RUN_SYSTEM, "value": key},
        "detail": [
            {
                "identifier": {"system": PAYOUT_SYSTEM, "value": reference},
                "type": {"coding": [{"system": PAYMENT_TYPE, "code": "payment"}]},
                "request": {"reference": f"Claim/{claim}"},
                "payee": payee,
                "date": at.astimezone(UTC).date().isoformat(),
                "amount": {"value": amount.quantize(CENT), "currency": currency},
            }
            for reference, claim, amount, at in rows
        ],
    }


LIST_MAX = 100  # as the other list endpoints of the API: at most 100, newest first


def provider_reconciliations(
    provider_id: int, *, before: int | None = None, limit: int = LIST_MAX
) -> list[dict]:
    """The finished runs that paid ``provider_id``, newest first (run id
    descending, ``before`` a run id for the next page), one entry per run and currency: what
    its ``PaymentReconciliation`` says, in short. Two queries whatever the number of runs."""
    limit = max(1, min(int(limit), LIST_MAX))
    mine = PaymentRunItem.objects.filter(payout__payee_id=provider_id, run__status__in=FINISHED)
    if before is not None:
        mine = mine.filter(run_id__lt=before)
    paid = mine.filter(settled_at__isnull=False)  # a run that paid this provider nothing has
    run_ids = list(  # no PaymentReconciliation (the operators see why on the run's page)
        paid.values_list("run_id", flat=True).distinct().order_by("-run_id")[:limit]
    )
    if not run_ids:
        return []
    rows = (
        mine.filter(run_id__in=run_ids)
        .values("run_id", "run__period", "run__status", "run__finished_at", "currency")
        .annotate(
            payouts=Count("pk", filter=Q(settled_at__isnull=False)),
            unsettled=Count("pk", filter=Q(settled_at__isnull=True)),
            amount=Sum("amount", filter=Q(settled_at__isnull=False)),
        )
        .filter(payouts__gt=0)
        .order_by("-run_id", "currency")
    )
    return [
        {
            "run": r["run_id"],
            "period": r["run__period"],
            "run_status": r["run__status"],
            "paid_at": r["run__finished_at"],
            "currency": r["currency"],
            "payouts": r["payouts"],
            "unsettled": r["unsettled"],
            "amount": (r["amount"] or Decimal("0.00")).quantize(CENT),
            "outcome": "partial" if r["unsettled"] else "complete",
            "identifier": f"{r['run_id']}-{provider_id}-{r['currency']}",
        }
        for r in rows
    ]


def provider_reconciliation(run_id: int, provider_id: int, currency: str = "") -> dict:
    """The ``PaymentReconciliation`` of run ``run_id`` for ``provider_id`` only: a run that is
    unknown or holds none of this provider's payouts is ``NotFound`` (another provider's run
    reveals nothing)."""
    run = PaymentRun.objects.filter(pk=run_id).first()
    if (
        run is None
        or not PaymentRunItem.objects.filter(run=run, payout__payee_id=provider_id).exists()
    ):
        raise NotFound(f"no payment run {run_id} paid you", code="unknown_payment_run")
    return payment_reconciliation(run, provider_id, currency)


def runs() -> QuerySet[PaymentRun]:
    """Payment runs, newest first (with their totals, for ``payment_progress``)."""
    return (
        PaymentRun.objects.select_related("created_by")
        .prefetch_related("totals")
        .order_by("-created_at")
    )


def payable_summary(period: date | None = None) -> list[dict]:
    """What a run for ``period`` (today by default) would pay now: count and amount per
    currency."""
    rows = (
        payable(period or timezone.now().astimezone(UTC).date())
        .values("currency")
        .annotate(payouts=Count("pk"), amount=Sum("amount"))
        .order_by("currency")
    )
    return list(rows)
