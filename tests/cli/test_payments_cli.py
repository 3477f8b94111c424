"""``claimproof payments list`` and ``payments show`` run for real against a live node: a
provider reads what the payment runs paid it, and only that; errors have clear messages and
the documented exit codes."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation

from payments import services
from review.models import Payout
from tests.claims import factories as cf
from tests.cli.test_cli import Cli
from tests.payments.helpers import approved_claims

pytestmark = pytest.mark.django_db(transaction=True)


def _settled(day):
    run = services.payment_run_start(day)
    chunks: list[int] = []
    services.payment_run_collect(run.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        services.payment_chunk_settle(chunk_id)
    return run


@pytest.fixture
def paid(live_server):
    """Provider A paid 2 x 105.00 yesterday and 80.50 today; provider B 105.00 today."""
    call_command("ledger_init", stdout=io.StringIO())
    a, b = cf.make_provider(), cf.make_provider(cf.LAB)
    today = timezone.now().date()
    first = approved_claims(2, a)
    Payout.objects.filter(claim__in=first).update(created_at=timezone.now() - timedelta(days=1))
    older = _settled(today - timedelta(days=1))
    approved_claims(1, a, unit_price="80.50")
    approved_claims(1, b)
    newer = _settled(today)
    return a, b, older, newer, live_server.url


def test_a_provider_lists_and_shows_its_remittances(paid, tmp_path):
    a, b, older, newer, url = paid
    cli = Cli(tmp_path, url, a.token)
    listed = cli("payments", "list").stdout
    lines = listed.splitlines()
    assert lines[0].split() == ["RUN", "PERIOD", "PAYOUTS", "AMOUNT", "OUTCOME"]
    assert lines[1].split() == [str(newer.pk), f"{newer.period}", "1", "80.50", "USD", "complete"]
    assert lines[2].split() == [str(older.pk), f"{older.period}", "2", "210.00", "USD", "complete"]
    rows = cli.json("payments", "list")
    assert [r["run"] for r in rows] == [newer.pk, older.pk]
    assert [r["run"] for r in cli.json("payments", "list", "--limit", "1")] == [newer.pk]
    after = cli.json("payments", "list", "--before", str(newer.pk))
    assert [r["run"] for r in after] == [older.pk]

    shown = cli("payments", "show", str(older.pk)).stdout
    assert shown.startswith(f"payment run {older.pk} for {older.period}, paid ")
    assert "210.00 USD in 2 payouts (complete)" in shown
    assert shown.count("  PO-") == 2 and "Claim/" in shown
    raw = cli("payments", "show", str(older.pk), "--json").stdout
    assert '"value": 210.00' in raw  # exact, as the node sent it
    resource = json.loads(raw)
    PaymentReconciliation.model_validate(resource)
    assert {d["payee"]["reference"] for d in resource["detail"]} == {a.organization}

    # B sees its own run only; A's older run is as unknown to B as a run that does not exist.
    other = Cli(tmp_path, url, b.token)
    assert [r["run"] for r in other.json("payments", "list")] == [newer.pk]
    for run_id in (older.pk, 999999):
        refused = other("payments", "show", str(run_id), code=1)
        assert "404 unknown_payment_run" in refused.stderr
        assert f"no payment run {run_id} paid you" in refused.stderr
    error = json.loads(other("payments", "show", str(older.pk), "--json", code=1).stdout)
    assert error["error"]["exit_code"] == 1 and error["error"]["code"] == "unknown_payment_run"


def test_usage_errors_and_an_unreachable_node(paid, tmp_path):
    a, b, _, newer, url = paid
    cli = Cli(tmp_path, url, a.token)
    assert "invalid int value" in cli("payments", "show", "seven", code=2).stderr
    assert "RUN_ID must be at least 1" in cli("payments", "show", "0", code=2).stderr
    assert "--limit must be at least 1" in cli("payments", "list", "--limit", "0", code=2).stderr
    cli("payments", code=2)  # no action
    assert "401" in cli("payments", "list", CLAIMPROOF_TOKEN="not-a-token", code=1).stderr
    cli("payments", "list", CLAIMPROOF_URL="http://127.0.0.1:9", code=3)
    other = Cli(tmp_path, url, b.token)  # B was paid by the newer run only
    before = ("payments", "list", "--before", str(newer.pk))
    assert other(*before).stdout.strip() == "no payment to you yet"
    assert other.json(*before) == []
