"""The work queue in Chromium: filtering swaps the table and pushes a URL that can be bookmarked,
the keyboard moves through claims, a claim's status changes on screen when its verification
finishes (no reload), and bulk approval of two claims shows what happened to each."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from claims.models import Claim
from claims.states import ClaimStatus
from review.models import Payout
from review.roles import Role
from tests.claims import factories as cf
from tests.review.factories import PASSWORD, decidable_claim, user_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
S = ClaimStatus


@pytest.fixture(autouse=True)
def workspace(settings):
    """Role groups (transactional tests empty every table) and the four-eyes amount."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)
    settings.REVIEW_FOUR_EYES_ABOVE = Decimal("1000.00")


def open_queue(page: Page, base: str, role: Role = Role.ADJUSTER) -> None:
    user = user_with(role)
    page.goto(f"{base}/login/?next=/queue/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/queue/$"))
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()


def row(page: Page, claim: Claim):
    return page.locator(f"#claim-row-{claim.pk}")


def test_filters_swap_the_table_and_push_a_url_that_opens_the_same_view(
    page: Page, live_server, artifacts: Path
) -> None:
    kit = cf.make_provider()
    verified = decidable_claim(kit)
    flagged = decidable_claim(kit, unit_price="6000.00", status=S.NEEDS_REVIEW)
    open_queue(page, live_server.url)
    expect(page.locator("table.queue tbody tr[id^='claim-row-']")).to_have_count(2)
    expect(page.get_by_test_id("tab-verified")).to_contain_text("1")  # counts arrived
    page.evaluate("window.__stillHere = 'yes'")

    page.get_by_test_id("tab-needs_review").click()
    expect(row(page, verified)).to_have_count(0)
    expect(row(page, flagged).get_by_test_id("status")).to_have_text("needs review")
    expect(page).to_have_url(re.compile(r"/queue/\?status=needs_review$"))

    page.get_by_label("Amount from").fill("abc")
    page.get_by_label("Amount from").press("Tab")
    expect(page.get_by_role("alert")).to_contain_text("is not a number")
    page.get_by_label("Amount from").fill("")
    page.get_by_label("Amount from").press("Tab")
    expect(page.get_by_role("alert")).to_have_count(0)
    assert page.evaluate("window.__stillHere") == "yes"  # htmx swapped the table: no reload
    page.screenshot(path=artifacts / "queue-filtered.png", full_page=True)

    # the pushed URL is a bookmark: opened afresh, it shows the same view
    page.goto(page.url)
    expect(page.locator("table.queue tbody tr[id^='claim-row-']")).to_have_count(1)
    expect(page.get_by_test_id("tab-needs_review").locator("input")).to_be_checked()

    # a column header sorts; the form's sort follows, so the next filter keeps it
    page.get_by_test_id("tab-all").click()
    expect(page.locator("table.queue tbody tr[id^='claim-row-']")).to_have_count(2)
    page.get_by_role("link", name=re.compile("^Total")).click()
    expect(page).to_have_url(re.compile(r"sort=amount_desc"))
    expect(page.get_by_label("Sort")).to_have_value("amount_desc")
    expect(page.locator("#queue-results select")).to_have_count(0)
    expect(page.locator("table.queue tbody tr[id^='claim-row-']").first).to_have_id(
        f"claim-row-{flagged.pk}"
    )

    # keyboard: "/" searches, j moves to a claim, Enter opens it
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type(verified.public_id.hex[:8])
    expect(row(page, flagged)).to_have_count(0)
    expect(page).to_have_url(re.compile(rf"q={verified.public_id.hex[:8]}"))
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    expect(row(page, verified)).to_have_class(re.compile("current"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/claims/{verified.public_id}/$"))


def test_a_claims_status_changes_on_screen_when_its_verification_finishes(
    page: Page, live_server
) -> None:
    kit = cf.make_provider()
    claim, _ = cf.claim_for(kit)
    assert claim.status == S.RECEIVED
    open_queue(page, live_server.url)
    badge = row(page, claim).get_by_test_id("status")
    expect(badge).to_have_text("received")
    expect(page.locator("#queue-live")).to_have_attribute("data-live", "on")
    page.evaluate("window.__stillHere = 'yes'")

    cf.verified(claim)  # what the worker does, committed: the live server sees it

    expect(badge).to_have_text("verified", timeout=15_000)
    expect(row(page, claim).locator("input[type=checkbox]")).to_have_count(1)
    expect(page.locator("#queue-live")).to_have_attribute("data-live", "off")  # polling stopped
    assert page.evaluate("window.__stillHere") == "yes"


def test_bulk_approve_two_claims_and_read_what_happened_to_each(
    page: Page, live_server, artifacts: Path
) -> None:
    kit = cf.make_provider()
    first, second = decidable_claim(kit), decidable_claim(kit)
    big = decidable_claim(kit, unit_price="600.00", procedures=2)  # 1200.00: two adjusters
    open_queue(page, live_server.url)
    page.evaluate("window.__stillHere = 'yes'")
    for claim in (first, second):
        row(page, claim).locator("input[type=checkbox]").check()
    expect(row(page, big).locator("input[type=checkbox]")).not_to_be_checked()
    page.get_by_test_id("bulk-approve").click()

    summary = page.get_by_test_id("bulk-summary")
    expect(summary).to_contain_text("Approved 2 of 2 selected claims.")
    expect(summary.get_by_test_id("bulk-line")).to_have_count(2)
    for claim in (first, second):
        payout = Payout.objects.get(claim=claim)
        expect(summary).to_contain_text(f"{payout.reference} of 105.00 USD")
        expect(row(page, claim).get_by_test_id("status")).to_have_text("approved")
        expect(row(page, claim).locator("input[type=checkbox]")).to_have_count(0)
    expect(row(page, big).get_by_test_id("status")).to_have_text("verified")
    assert page.evaluate("window.__stillHere") == "yes"
    page.screenshot(path=artifacts / "queue-bulk-approved.png", full_page=True)


def test_auditors_read_the_queue_without_checkboxes(page: Page, live_server) -> None:
    claim = decidable_claim()
    open_queue(page, live_server.url, Role.AUDITOR)
    expect(row(page, claim).get_by_test_id("status")).to_have_text("verified")
    expect(page.locator("table.queue input[type=checkbox]")).to_have_count(0)
    expect(page.get_by_test_id("bulk-approve")).to_have_count(0)
