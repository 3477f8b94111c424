"""Payment runs: a period is paid once, a payout is in one run, chunks settle in one transaction
each and never twice, totals per currency, the remittance as CSV and FHIR, and the command.
Real claims approved through the adjusters' service, PostgreSQL."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation

from audit.models import AuditEntry
from claims.api import fhir_response
from claims.models import Claim, ClaimEvent
from claims.states import ClaimStatus
from config.errors import Conflict, Unprocessable
from payments import services
from payments.models import PaymentChunk, PaymentRun, PaymentRunItem, PaymentRunTotal
from review.models import Payout
from tests.claims import factories as cf
from tests.payments.helpers import approved_claims

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
S = ClaimStatus
P = PaymentRun.Status


def today():
    return timezone.now().date()


def collected(run: PaymentRun) -> list[int]:
    """Collect ``run`` here; the chunk ids it would have queued."""
    chunks: list[int] = []
    services.payment_run_collect(run.pk, dispatch=chunks.append)
    return chunks


def settle_all(run: PaymentRun) -> PaymentRun:
    for chunk_id in collected(run):
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    return run


def paid_events(claims) -> int:
    return ClaimEvent.objects.filter(claim_id__in=[c.pk for c in claims], new_status=S.PAID).count()


def test_a_run_pays_every_approved_claim_once_with_totals_per_currency(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    claims = approved_claims(5)
    Payout.objects.filter(claim=claims[0]).update(currency="EUR")
    run = services.payment_run_start(today(), None, reason="daily")
    chunks = collected(run)
    run.refresh_from_db()
    assert (run.status, run.collected, run.chunks, run.total) == (P.RUNNING, True, 3, 5)
    assert services.payment_progress(run)["percent"] == 0.0
    for chunk_id in chunks:
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    assert (run.status, run.settled, run.errors, run.chunks_done) == (P.SETTLED, 5, 0, 3)
    statuses = Claim.objects.filter(pk__in=[c.pk for c in claims]).values_list("status", flat=True)
    assert set(statuses) == {S.PAID}
    assert not Payout.objects.filter(settled_at__isnull=True).exists()
    assert paid_events(claims) == 5
    totals = {t.currency: t for t in PaymentRunTotal.objects.filter(run=run)}
    assert (totals["USD"].payouts, totals["USD"].settled_amount) == (4, Decimal("420.00"))
    assert (totals["EUR"].payouts, totals["EUR"].settled_amount) == (1, Decimal("105.00"))
    progress = services.payment_progress(run)
    assert (progress["percent"], progress["done"], progress["eta_s"]) == (100.0, 5, 0.0)
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"payment_run.start", "payment_run.settled"} <= actions


def test_only_approved_unsettled_payouts_of_the_period_are_collected():
    old, new = approved_claims(2), approved_claims(1)
    Payout.objects.filter(claim__in=old).update(created_at=timezone.now() - timedelta(days=2))
    yesterday = services.payment_run_start(today() - timedelta(days=1))
    settle_all(yesterday)
    assert set(
        PaymentRunItem.objects.filter(run=yesterday).values_list("payout__claim", flat=True)
    ) == {c.pk for c in old}
    run = services.payment_run_start(today())
    settle_all(run)
    assert list(PaymentRunItem.objects.filter(run=run).values_list("payout__claim", flat=True)) == [
        new[0].pk
    ]


def test_a_chunk_settled_twice_settles_once(settings):
    settings.PAYMENTS_CHUNK_SIZE = 10
    claims = approved_claims(3)
    run = services.payment_run_start(today())
    (chunk_id,) = collected(run)
    services.payment_chunk_settle(chunk_id)
    first = list(Payout.objects.order_by("pk").values_list("settled_at", flat=True))
    services.payment_chunk_settle(chunk_id)  # a redelivered task
    run.refresh_from_db()
    assert (run.settled, run.chunks_done, run.status) == (3, 1, P.SETTLED)
    assert list(Payout.objects.order_by("pk").values_list("settled_at", flat=True)) == first
    assert paid_events(claims) == 3
    assert PaymentRunTotal.objects.get(run=run).settled_amount == Decimal("315.00")


def test_a_chunk_cut_short_leaves_nothing_settled_and_its_rerun_settles_each_once(
    settings, monkeypatch
):
    settings.PAYMENTS_CHUNK_SIZE = 10
    claims = approved_claims(3)
    run = services.payment_run_start(today())
    (chunk_id,) = collected(run)
    real = services.claim_transition
    calls = []

    def dies_on_the_third(**kwargs):
        calls.append(kwargs["claim"].pk)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(services, "claim_transition", dies_on_the_third)
    with pytest.raises(RuntimeError):
        services.payment_chunk_settle(chunk_id)
    assert set(Claim.objects.values_list("status", flat=True)) == {S.APPROVED}
    assert not Payout.objects.filter(settled_at__isnull=False).exists()
    assert PaymentChunk.objects.get(pk=chunk_id).status == PaymentChunk.Status.PENDING
    monkeypatch.setattr(services, "claim_transition", real)
    services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    assert (run.status, run.settled) == (P.SETTLED, 3)
    assert paid_events(claims) == 3
    assert PaymentChunk.objects.get(pk=chunk_id).attempts == 2


def test_a_redelivered_collector_collects_nothing_twice(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    approved_claims(3)
    run = services.payment_run_start(today())
    first = collected(run)
    PaymentRun.objects.filter(pk=run.pk).update(collected=False)  # as if it died at the end
    again = collected(run)
    assert again == first  # the pending chunks are dispatched again, none is added
    run.refresh_from_db()
    assert (run.chunks, run.total, PaymentRunItem.objects.count()) == (2, 3, 3)


def test_a_period_is_paid_once_and_bad_periods_are_refused():
    run = services.payment_run_start(today())
    with pytest.raises(Conflict) as exc:
        services.payment_run_start(today().isoformat())
    assert exc.value.status_code == 409 and exc.value.code == "payment_run_exists"
    assert f"run {run.pk}" in exc.value.detail
    with pytest.raises(Unprocessable) as bad:
        services.payment_run_start("25/11/2026")
    assert bad.value.code == "bad_period"
    with pytest.raises(Unprocessable) as future:
        services.payment_run_start(today() + timedelta(days=1))
    assert future.value.code == "future_period"
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentRun.objects.create(period=today())
    assert PaymentRun.objects.count() == 1


def test_a_payout_is_in_at_most_one_run():
    approved_claims(1)
    run = services.payment_run_start(today() - timedelta(days=3))
    PaymentRun.objects.filter(pk=run.pk).update(status=P.RUNNING)
    chunk = PaymentChunk.objects.create(run=run, number=0, first_id=0, last_id=0, size=1)
    payout = Payout.objects.get()
    PaymentRunItem.objects.create(
        run=run, chunk=chunk, payout=payout, amount=payout.amount, currency="USD"
    )
    later = services.payment_run_start(today())
    settle_all(later)
    assert later.total == 0 and later.status == P.SETTLED  # nothing left for it
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentRunItem.objects.create(
            run=later, chunk=chunk, payout=payout, amount=payout.amount, currency="USD"
        )


def test_the_remittance_csv_and_fhir_payment_reconciliation(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    claims = approved_claims(3)
    run = services.payment_run_start(today())
    with pytest.raises(Conflict):  # not settled yet
        services.payment_reconciliation(run, claims[0].provider_id)
    run = settle_all(run)
    rows = list(services.remittance_rows(run))
    assert rows[0] == [
        "provider", "provider_id", "claim", "provider_reference", "payout_reference",
        "amount", "currency", "settled_at",
    ]  # fmt: skip
    assert len(rows) == 4
    assert {r[2] for r in rows[1:]} == {str(c.public_id) for c in claims}
    assert {r[4] for r in rows[1:]} == {c.payout.reference for c in claims}
    assert {(r[5], r[6]) for r in rows[1:]} == {("105.00", "USD")}
    by_payout = sorted(claims, key=lambda c: c.payout.pk)
    assert [r[3] for r in rows[1:]] == [c.provider_reference for c in by_payout]

    resource = services.payment_reconciliation(run, claims[0].provider_id)
    text = fhir_response(resource).content.decode()
    assert '"paymentAmount": {"value": 315.00, "currency": "USD"}' in text
    assert text.count('"value": 105.00') == 3
    parsed = PaymentReconciliation.model_validate(json.loads(text))
    assert parsed.paymentAmount.value == Decimal("315.00")
    assert {d.request.reference for d in parsed.detail} == {f"Claim/{c.public_id}" for c in claims}
    assert {d.identifier.value for d in parsed.detail} == {c.payout.reference for c in claims}


def test_a_provider_paid_in_two_currencies_gets_one_resource_per_currency():
    claims = approved_claims(2)
    Payout.objects.filter(claim=claims[0]).update(currency="EUR")
    run = settle_all(services.payment_run_start(today()))
    with pytest.raises(Unprocessable) as exc:
        services.payment_reconciliation(run, claims[0].provider_id)
    assert exc.value.code == "currency_required"
    eur = services.payment_reconciliation(run, claims[0].provider_id, "eur")
    assert eur["paymentAmount"] == {"value": Decimal("105.00"), "currency": "EUR"}
    assert len(eur["detail"]) == 1


def test_the_command_settles_inline_with_a_progress_bar_and_writes_the_remittance(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    approved_claims(3)
    out = io.StringIO()
    call_command("payment_run", "--period", today().isoformat(), "--inline", stdout=out)
    run = PaymentRun.objects.get()
    text = out.getvalue()
    assert run.status == P.SETTLED and "\r[" in text and "3/3 100.0%" in text
    assert "paid 315.00 USD" in text and f"payment run {run.pk} settled" in text
    assert set(Claim.objects.values_list("status", flat=True)) == {S.PAID}
    with pytest.raises(CommandError, match="already has a payment run"):
        call_command("payment_run", "--period", today().isoformat(), stdout=io.StringIO())
    with pytest.raises(CommandError, match="is not a day"):
        call_command("payment_run", "--period", "yesterday", stdout=io.StringIO())
    csv_out = io.StringIO()
    call_command("payment_run", "--remittance", str(run.pk), stdout=csv_out)
    lines = csv_out.getvalue().splitlines()
    assert lines[0].startswith("provider,provider_id,claim") and len(lines) == 4


# --- concurrency on PostgreSQL ----------------------------------------------------------------


def _race(n: int, work) -> list:
    """Run ``work(i)`` in ``n`` threads released together; each result or exception."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_of_one_period_exactly_one_wins():
    results = _race(6, lambda i: services.payment_run_start(today(), None, reason=f"try {i}"))
    runs = [r for r in results if isinstance(r, PaymentRun)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(runs) == 1 and len(refused) == 5, results
    assert all(r.code == "payment_run_exists" for r in refused)
    assert PaymentRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_runs_collecting_at_once_never_share_a_payout(settings):
    settings.PAYMENTS_CHUNK_SIZE = 2
    approved_claims(7)
    Payout.objects.update(created_at=timezone.now() - timedelta(days=2))
    runs = [
        PaymentRun.objects.create(period=today() - timedelta(days=d), status=P.PLANNED)
        for d in (0, 1)
    ]
    _race(2, lambda i: services.payment_run_collect(runs[i].pk, dispatch=lambda _: None))
    taken = list(PaymentRunItem.objects.values_list("payout_id", flat=True))
    assert sorted(taken) == sorted(Payout.objects.values_list("pk", flat=True))
    assert sum(PaymentRun.objects.get(pk=r.pk).total for r in runs) == 7


def test_a_payout_whose_claim_cannot_be_paid_fails_the_run_and_stays_unsettled():
    from claims.states import claim_transition

    claims = approved_claims(2)
    run = services.payment_run_start(today())
    chunks = collected(run)
    claim_transition(claim=claims[0], to=S.PAID, reason="paid by hand, outside any run")
    for chunk_id in chunks:
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    assert (run.status, run.settled, run.errors) == (P.FAILED, 1, 1)
    assert run.error == "1 of 2 payouts could not be settled"
    item = PaymentRunItem.objects.get(payout__claim=claims[0])
    assert item.settled_at is None and "cannot go from paid to paid" in item.error
    assert Payout.objects.get(claim=claims[0]).settled_at is None
    assert Payout.objects.get(claim=claims[1]).settled_at is not None
    resource = services.payment_reconciliation(run, claims[0].provider_id)
    assert resource["outcome"] == "partial" and len(resource["detail"]) == 1
    assert AuditEntry.objects.filter(action="payment_run.failed").exists()


def test_a_claim_signed_with_a_key_revoked_before_its_receipt_is_not_paid():
    """A backdated revocation (the key was stolen earlier) voids the signature, and with it the
    approval: the payout is held for a person, never paid; a later revocation changes nothing."""
    from claims.models import ProviderKey
    from claims.services import provider_key_revoke

    kit_a, kit_b = cf.make_provider(), cf.make_provider(cf.LAB)
    stolen, honest = approved_claims(1, kit_a)[0], approved_claims(1, kit_b)[0]
    provider_key_revoke(
        key=ProviderKey.objects.get(kid=stolen.kid),
        at=stolen.created_at - timedelta(hours=1),
        reason="laptop stolen",
    )
    provider_key_revoke(
        key=ProviderKey.objects.get(kid=honest.kid),
        at=timezone.now(),
        reason="routine rotation",
    )
    run = services.payment_run_start(today())
    for chunk_id in collected(run):
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    assert (run.status, run.settled, run.errors) == (P.FAILED, 1, 1)
    item = PaymentRunItem.objects.get(payout__claim=stolen)
    assert item.settled_at is None and "laptop stolen" in item.error
    assert Claim.objects.get(pk=stolen.pk).status == S.APPROVED
    assert Claim.objects.get(pk=honest.pk).status == S.PAID
