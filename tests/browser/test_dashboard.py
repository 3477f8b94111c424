"""The dashboard as an adjuster sees it in Chromium: log in, land on it, read the charts and
their numbers, switch the period without a reload."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from claims.models import Provider
from claims.states import ClaimStatus
from ledger.models import Member
from review.roles import Role
from tests.review.factories import PASSWORD, user_with
from tests.review.test_dashboard import check, claim, day, payout, verified_after

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
S = ClaimStatus
TITLES = (
    "Open claims by status at the end of each day, last {days} days",
    "Verification latency per day (median and 95th percentile), last {days} days",
    "Reject reasons, last {days} days",
    "Payouts per day in EUR, last {days} days",
)


@pytest.fixture
def known_data() -> None:
    """Two claims verified yesterday (42 s and 90 s after receipt), one rejected for double
    billing, two approved payouts in EUR: one yesterday, one 20 days ago."""
    now = datetime.now(UTC)
    provider = Provider.objects.create(
        name="Dash Hospital", member=Member.objects.create(name="dash-browser.example")
    )
    verified_after(provider, day(-1, 8, base=now), 42)
    verified_after(provider, day(-1, 9, base=now), 90, S.NEEDS_REVIEW)
    rejected = verified_after(provider, day(-2, base=now), 12, S.REJECTED)
    check(rejected, 1, "double_billing", "fail", rejected.updated_at)
    payout(claim(provider, S.APPROVED, day(-3, base=now)), "1234.56", "EUR", day(-1, base=now))
    payout(claim(provider, S.APPROVED, day(-21, base=now)), "777.00", "EUR", day(-20, base=now))


def _log_in(page: Page, base_url: str) -> None:
    user = user_with(Role.ADJUSTER)
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_an_adjuster_lands_on_the_dashboard_and_switches_the_period(
    page: Page, live_server, known_data, artifacts: Path
) -> None:
    _log_in(page, live_server.url)
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    for title in TITLES:
        expect(page.get_by_role("img", name=title.format(days=30))).to_be_visible()
    expect(page.get_by_test_id("awaiting-decision")).to_contain_text("2 claims awaiting")
    expect(page.get_by_test_id("unpaid")).to_contain_text("2011.56 EUR")
    tile = page.locator('[data-status="needs_review"] a')
    expect(tile).to_have_attribute("href", "/queue/?status=needs_review")
    expect(tile).to_contain_text("1")
    expect(page.locator("#payouts h3")).to_have_text("EUR: 2 payouts, 2011.56 EUR")
    expect(page.locator("#reject-reasons svg")).to_contain_text("Double billing")
    latency = page.locator("#latency")
    latency.get_by_text("The numbers, per day").click()
    expect(latency.get_by_test_id("latency-table")).to_contain_text("66 s")  # median of 42, 90
    page.screenshot(path=artifacts / "dashboard-30-days.png", full_page=True)

    page.evaluate("window.__stillHere = 'yes'")
    page.get_by_label("7 days").check()
    expect(page.get_by_test_id("charts")).to_have_attribute("data-days", "7")
    for title in TITLES:
        expect(page.get_by_role("img", name=title.format(days=7))).to_be_visible()
    expect(page.locator("#payouts h3")).to_have_text("EUR: 1 payout, 1234.56 EUR")
    assert page.evaluate("window.__stillHere") == "yes"  # htmx swapped the charts, no reload
    assert re.search(r"\?days=7&statuses=open$", page.url)  # and the URL works on its own
    page.screenshot(path=artifacts / "dashboard-7-days.png", full_page=True)

    page.get_by_label("all claims").check()
    expect(page.get_by_test_id("charts")).to_have_attribute("data-statuses", "all")
    status_chart = page.get_by_role("img", name=re.compile("^Claims by status .* last 7 days$"))
    expect(status_chart.locator('rect[data-series="rejected"]').first).to_be_attached()
    assert page.evaluate("window.__stillHere") == "yes"
