"""The providers' remittance API through DRF's client with provider tokens: each provider
lists and reads only its own PaymentReconciliations (another provider's run is 404), newest
first, in pages; the OpenAPI schema describes both endpoints. Real payment runs, PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation
from rest_framework.test import APIClient

from payments import services
from payments.models import PaymentRun
from review.models import Payout
from tests.claims import factories as cf
from tests.payments.helpers import approved_claims
from tests.review.factories import user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
URL = "/api/v1/payments/reconciliations"


def client_for(kit: cf.ProviderKit) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client


def settled_run(day) -> PaymentRun:
    run = services.payment_run_start(day)
    chunks: list[int] = []
    services.payment_run_collect(run.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        services.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    return run


@pytest.fixture
def two_providers():
    """Provider A paid by two runs (2 payouts, then 1), provider B by the second only."""
    a, b = cf.make_provider(), cf.make_provider(cf.LAB)
    today = timezone.now().date()
    first = approved_claims(2, a)
    Payout.objects.filter(claim__in=first).update(created_at=timezone.now() - timedelta(days=1))
    older = settled_run(today - timedelta(days=1))
    approved_claims(1, a, unit_price="80.50")
    approved_claims(1, b)
    newer = settled_run(today)
    return a, b, older, newer


def test_a_provider_lists_only_its_own_remittances_newest_first(two_providers):
    a, b, older, newer = two_providers
    listed = client_for(a).get(URL)
    assert listed.status_code == 200
    rows = listed.json()
    assert [r["run"] for r in rows] == [newer.pk, older.pk]
    assert rows[0]["amount"] == "80.50" and rows[0]["payouts"] == 1
    assert rows[1]["amount"] == "210.00" and rows[1]["payouts"] == 2
    expected = {
        "period": older.period.isoformat(),
        "run_status": "settled",
        "currency": "USD",
        "outcome": "complete",
        "unsettled": 0,
        "identifier": f"{older.pk}-{a.provider.pk}-USD",
        "url": f"{URL}/{older.pk}",
    }
    assert {k: rows[1][k] for k in expected} == expected
    assert [r["run"] for r in client_for(b).get(URL).json()] == [newer.pk]

    # Pages: limit and before (a run id), as far back as it goes.
    page = client_for(a).get(URL, {"limit": 1}).json()
    assert [r["run"] for r in page] == [newer.pk]
    page = client_for(a).get(URL, {"limit": 1, "before": newer.pk}).json()
    assert [r["run"] for r in page] == [older.pk]
    assert client_for(a).get(URL, {"before": older.pk}).json() == []
    bad = client_for(a).get(URL, {"limit": "ten"})
    assert bad.status_code == 422 and bad.json()["code"] == "bad_query"
    assert client_for(a).get(URL, {"before": 0}).status_code == 422


def test_a_provider_reads_its_payment_reconciliation_and_nobody_elses(two_providers):
    a, b, older, newer = two_providers
    answer = client_for(a).get(f"{URL}/{older.pk}")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/fhir+json"
    assert b'"value": 210.00' in answer.content  # exact decimals, two places
    resource = json.loads(answer.content)
    PaymentReconciliation.model_validate(resource)  # valid FHIR R4
    assert resource["identifier"][0]["value"] == f"{older.pk}-{a.provider.pk}-USD"
    assert resource["outcome"] == "complete" and len(resource["detail"]) == 2
    assert {d["payee"]["reference"] for d in resource["detail"]} == {a.organization}
    # B's share of the newer run is B's only
    mine = json.loads(client_for(b).get(f"{URL}/{newer.pk}").content)
    assert [d["payee"]["reference"] for d in mine["detail"]] == [b.organization]
    assert Decimal(str(mine["paymentAmount"]["value"])) == Decimal("105.00")

    for url in (f"{URL}/{older.pk}", f"{URL}/999999"):  # not B's, unknown: the same 404
        refused = client_for(b).get(url)
        assert refused.status_code == 404, url
        assert refused.json() == {
            "code": "unknown_payment_run",
            "detail": f"no payment run {url.rsplit('/', 1)[1]} paid you",
        }
    assert client_for(a).get(f"{URL}/{older.pk}", {"currency": "EUR"}).status_code == 404
    assert client_for(a).get(f"{URL}/abc").status_code == 404


def test_an_unfinished_run_is_a_conflict_and_strangers_are_refused():
    kit = cf.make_provider()
    approved_claims(1, kit)
    run = services.payment_run_start(timezone.now().date())
    services.payment_run_collect(run.pk, dispatch=lambda _: None)  # collected, not settled
    assert client_for(kit).get(URL).json() == []  # nothing paid yet
    waiting = client_for(kit).get(f"{URL}/{run.pk}")
    assert waiting.status_code == 409 and waiting.json()["code"] == "payment_run_unsettled"
    assert APIClient().get(URL).status_code in (401, 403)
    staff = APIClient()
    staff.force_authenticate(user_with())  # signed in, bound to no provider
    assert staff.get(URL).status_code == 403
    assert staff.get(f"{URL}/{run.pk}").status_code == 403


def test_the_openapi_schema_describes_the_remittance_api():
    schema = APIClient().get("/api/v1/schema", {"format": "json"})
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    listing = paths["/api/v1/payments/reconciliations"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "before"}
    one = paths["/api/v1/payments/reconciliations/{run_id}"]["get"]
    assert "application/fhir+json" in one["responses"]["200"]["content"]
    assert {"404", "409", "422"} <= set(one["responses"])


def test_a_run_that_paid_in_two_currencies_is_one_entry_each_and_needs_the_currency():
    kit = cf.make_provider()
    euro, _ = approved_claims(2, kit)
    Payout.objects.filter(claim=euro).update(currency="EUR")
    run = settled_run(timezone.now().date())
    rows = client_for(kit).get(URL).json()
    assert [(r["run"], r["currency"], r["amount"]) for r in rows] == [
        (run.pk, "EUR", "105.00"),
        (run.pk, "USD", "105.00"),
    ]
    assert rows[0]["url"] == f"{URL}/{run.pk}?currency=EUR"
    refused = client_for(kit).get(f"{URL}/{run.pk}")
    assert refused.status_code == 422 and refused.json()["code"] == "currency_required"
    euros = json.loads(client_for(kit).get(rows[0]["url"]).content)
    assert euros["paymentAmount"]["currency"] == "EUR" and len(euros["detail"]) == 1
