"""The jobs pages in Chromium, against a live server and a real Celery worker: an operator
starts a verification job and watches its bar reach 100% without reloading, then starts a
payment run and sees the approved claims paid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from claims.models import Claim
from claims.states import ClaimStatus
from jobs.models import BatchJob
from payments.models import PaymentRun
from review.roles import Role
from tests.payments.helpers import approved_by_the_worker, role_groups
from tests.review.factories import PASSWORD, user_with

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
LONG_MS = 30_000  # a real worker does the work


def _log_in(page: Page, base: str, username: str, next_url: str) -> None:
    page.goto(f"{base}/login/?next={next_url}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}{next_url}")


def test_an_operator_runs_a_job_live_and_pays_approved_claims(
    page: Page, live_server, celery_worker, settings, artifacts: Path
) -> None:
    settings.JOBS_CHUNK_SIZE = 2
    settings.PAYMENTS_CHUNK_SIZE = 2
    role_groups()
    claims = approved_by_the_worker(6, left_verified=2)[:4]
    operator = user_with(Role.OPERATOR)
    base = live_server.url
    _log_in(page, base, operator.username, "/jobs/")
    expect(page.get_by_test_id("payable")).to_contain_text("4 payouts, 420.00 USD")

    # A verification job over every claim, followed live on its page.
    page.get_by_label("Every claim").check()
    page.get_by_role("button", name="Start verification job").click()
    job = BatchJob.objects.get()
    expect(page).to_have_url(f"{base}/jobs/{job.pk}/")
    page.evaluate("window.__stillHere = 'yes'")
    expect(page.get_by_test_id("percent")).to_have_text("100.0%", timeout=LONG_MS)
    expect(page.get_by_test_id("status")).to_have_text("DONE")
    expect(page.get_by_test_id("bar")).to_have_attribute("aria-valuenow", "100.0")
    expect(page.get_by_test_id("done")).to_have_text("6")
    expect(page.get_by_test_id("eta")).to_have_text("0:00:00")
    # the 2 verified claims pass again, and so do the 4 approved ones, not paid yet (they go
    # back to approved with their payout)
    expect(page.get_by_test_id("passed")).to_have_text("6")
    expect(page.get_by_test_id("skipped")).to_have_text("0")
    expect(page.get_by_test_id("failed")).to_have_text("0")
    expect(page.get_by_test_id("changed")).to_have_text("0")
    expect(page.get_by_test_id("live")).to_have_attribute("data-running", "no")
    assert page.evaluate("window.__stillHere") == "yes"  # htmx swapped fragments, no reload
    page.screenshot(path=artifacts / "jobs-job-done.png", full_page=True)

    # A payment run for today: the approved claims are paid.
    page.get_by_role("link", name="← Jobs").click()
    page.get_by_role("button", name="Start payment run").click()
    run = PaymentRun.objects.get()
    expect(page).to_have_url(f"{base}/payments/runs/{run.pk}/")
    page.evaluate("window.__stillHere = 'yes'")
    expect(page.get_by_test_id("status")).to_have_text("SETTLED", timeout=LONG_MS)
    expect(page.get_by_test_id("percent")).to_have_text("100.0%")
    expect(page.get_by_test_id("settled")).to_have_text("4")
    expect(page.get_by_test_id("settled-USD")).to_have_text("420.00")
    expect(page.get_by_test_id("claim-status")).to_have_text(["PAID"] * 4)
    expect(page.get_by_test_id("fhir-link")).to_have_count(1)
    assert page.evaluate("window.__stillHere") == "yes"
    statuses = Claim.objects.filter(pk__in=[c.pk for c in claims]).values_list("status", flat=True)
    assert set(statuses) == {ClaimStatus.PAID}
    page.screenshot(path=artifacts / "jobs-payment-run.png", full_page=True)

    # Both are on the jobs page, newest first.
    page.get_by_role("link", name="← Jobs").click()
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(re.compile(f"Payment run {run.pk}.*SETTLED", re.S))
    expect(rows.nth(1)).to_contain_text(re.compile(f"Verification job {job.pk}.*DONE", re.S))
    page.screenshot(path=artifacts / "jobs-index.png", full_page=True)


def test_an_auditor_sees_the_jobs_page_without_start_buttons(page: Page, live_server) -> None:
    role_groups()
    auditor = user_with(Role.AUDITOR)
    _log_in(page, live_server.url, auditor.username, "/jobs/")
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Start verification job")).to_have_count(0)
    expect(page.get_by_role("button", name="Start payment run")).to_have_count(0)
