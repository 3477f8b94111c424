"""Payment run pages through Django's test client: operators start a run from /jobs/, a period
is paid once (409 with the reason), everyone with the jobs page reads the run's progress,
totals, CSV remittance and FHIR PaymentReconciliation; adjusters are refused. PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation

from claims.models import Claim
from claims.states import ClaimStatus
from payments import services
from payments.models import PaymentRun
from review.models import Payout
from review.roles import Role
from tests.payments.helpers import approved_claims
from tests.review.factories import user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
P = PaymentRun.Status


def client_for(*roles: Role) -> Client:
    client = Client()
    client.force_login(user_with(*roles))
    return client


def settle(run: PaymentRun) -> PaymentRun:
    chunks: list[int] = []
    services.payment_run_collect(run.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    return run


def test_an_operator_starts_the_run_of_a_period_once():
    approved_claims(2)
    operator = client_for(Role.OPERATOR)
    page = operator.get("/jobs/").content.decode()
    assert "<strong>2</strong> payouts, 210.00 USD" in page  # what a run would pay now
    today = timezone.now().date().isoformat()
    response = operator.post("/payments/runs/", {"period": today, "reason": "daily"})
    run = PaymentRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/payments/runs/{run.pk}/"
    assert (run.period.isoformat(), run.reason, run.status) == (today, "daily", P.PLANNED)
    again = operator.post("/payments/runs/", {"period": today})
    assert again.status_code == 409
    assert f"already has a payment run (run {run.pk}, planned)" in again.content.decode()
    tomorrow = (timezone.now().date() + timedelta(days=1)).isoformat()
    future = operator.post("/payments/runs/", {"period": tomorrow})
    assert future.status_code == 422 and "has not begun" in future.content.decode()
    bad = operator.post("/payments/runs/", {"period": "soon"})
    assert bad.status_code == 422 and "Enter a valid date." in bad.content.decode()
    assert PaymentRun.objects.count() == 1


def test_the_run_page_shows_progress_then_totals_paid_claims_and_exports():
    claims = approved_claims(3)
    run = services.payment_run_start(None, None)
    auditor = client_for(Role.AUDITOR)
    html = auditor.get(f"/payments/runs/{run.pk}/progress/").content.decode()
    assert f'hx-get="/payments/runs/{run.pk}/progress/"' in html and "PLANNED" in html
    assert "PaymentReconciliation</a>" not in html  # only once settled

    settle(run)
    html = auditor.get(f"/payments/runs/{run.pk}/").content.decode()
    assert "hx-trigger" not in html and "SETTLED" in html
    assert 'data-testid="percent">100.0%' in html and 'data-testid="settled">3<' in html
    assert 'data-testid="settled-USD">315.00<' in html
    assert html.count(">PAID</span>") == 3
    for claim in claims:
        assert str(claim.public_id) in html
    provider = claims[0].provider_id
    fhir_url = f"/payments/runs/{run.pk}/providers/{provider}/PaymentReconciliation?currency=USD"
    assert f'href="{fhir_url}"' in html

    fhir = auditor.get(fhir_url)
    assert fhir.status_code == 200 and fhir["Content-Type"] == "application/fhir+json"
    body = fhir.content.decode()
    assert '"paymentAmount": {"value": 315.00, "currency": "USD"}' in body
    resource = PaymentReconciliation.model_validate(json.loads(body))
    assert len(resource.detail) == 3 and resource.paymentAmount.value == Decimal("315.00")

    remittance = auditor.get(f"/payments/runs/{run.pk}/remittance.csv")
    assert remittance.status_code == 200 and remittance["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(remittance.streaming_content).decode())))
    assert rows[0][:7] == [
        "provider", "provider_id", "claim", "provider_reference", "payout_reference",
        "amount", "currency",
    ]  # fmt: skip
    assert sorted(r[4] for r in rows[1:]) == sorted(
        Payout.objects.values_list("reference", flat=True)
    )
    assert {r[5] for r in rows[1:]} == {"105.00"}
    assert set(Claim.objects.values_list("status", flat=True)) == {ClaimStatus.PAID}


def test_fhir_export_errors_are_json_with_a_reason():
    claims = approved_claims(1)
    run = services.payment_run_start(None, None)
    operator = client_for(Role.OPERATOR)
    url = f"/payments/runs/{run.pk}/providers/{claims[0].provider_id}/PaymentReconciliation"
    early = operator.get(url)
    assert early.status_code == 409 and early.json()["code"] == "payment_run_unsettled"
    settle(run)
    assert operator.get(url + "?currency=EUR").json()["code"] == "not_paid"
    nobody = f"/payments/runs/{run.pk}/providers/999999/PaymentReconciliation"
    assert operator.get(nobody).status_code == 404
    assert operator.get("/payments/runs/999999/").status_code == 404


def test_adjusters_and_providers_cannot_see_or_start_runs():
    claims = approved_claims(1)
    run = settle(services.payment_run_start(None, None))
    adjuster = client_for(Role.ADJUSTER)
    provider_user = Client()
    provider_user.force_login(Claim.objects.get(pk=claims[0].pk).submitted_by)
    for client in (adjuster, provider_user):
        for url in (
            f"/payments/runs/{run.pk}/",
            f"/payments/runs/{run.pk}/remittance.csv",
            f"/payments/runs/{run.pk}/providers/{claims[0].provider_id}/PaymentReconciliation",
        ):
            assert client.get(url).status_code == 403, url
        assert client.post("/payments/runs/", {"period": "2026-01-01"}).status_code == 403
    assert PaymentRun.objects.count() == 1


def test_the_admin_shows_runs_read_only():
    from django.contrib.auth import get_user_model

    approved_claims(1)
    run = settle(services.payment_run_start(None, None))
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", password="pw-root-1"))
    for url in (
        "/admin/payments/paymentrun/",
        f"/admin/payments/paymentrun/{run.pk}/change/",
        "/admin/payments/paymentchunk/",
        "/admin/payments/paymentrunitem/",
    ):
        assert admin.get(url).status_code == 200, url
    assert admin.get("/admin/payments/paymentrun/add/").status_code == 403
    assert admin.post(f"/admin/payments/paymentrun/{run.pk}/delete/").status_code == 403
    assert PaymentRun.objects.filter(pk=run.pk, status=P.SETTLED).exists()
