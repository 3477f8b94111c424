"""A claim's page in Chromium: the evidence, a denial with its reason, four-eyes with two
adjusters in two browser contexts, and the live status while verification runs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Browser, Page, expect

from claims.models import Claim
from claims.states import ClaimStatus
from review.models import Payout
from review.roles import Role
from tests.claims import factories as cf
from tests.review.factories import PASSWORD, decidable_claim, user_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def workspace(settings):
    """Role groups (transactional tests empty every table) and the four-eyes amounts."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)
    settings.REVIEW_FOUR_EYES_ABOVE = Decimal("1000.00")
    settings.REVIEW_SENIOR_ABOVE = Decimal("10000.00")


def log_in(page: Page, base: str, user) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("who")).to_contain_text(user.username)


def open_claim(page: Page, base: str, claim: Claim) -> None:
    page.goto(f"{base}/claims/{claim.public_id}/")
    expect(page.get_by_test_id("claim-id")).to_have_text(str(claim.public_id))


def test_an_adjuster_sees_the_proof_and_denies_with_a_reason(
    page: Page, live_server, artifacts: Path
) -> None:
    claim = decidable_claim()
    log_in(page, live_server.url, user_with(Role.ADJUSTER))
    open_claim(page, live_server.url, claim)
    expect(page.locator("svg.proof-path")).to_have_count(1)
    expect(page.get_by_test_id("proof-verdict")).to_contain_text("✓ Verified on this page")
    cosigners = page.get_by_test_id("cosigners")
    for name in ("St Mary's Hospital", "North Laboratory", "Acme Insurance"):
        expect(cosigners).to_contain_text(name)
    page.screenshot(path=artifacts / "claim-page.png", full_page=True)

    page.evaluate("window.__stillHere = 'yes'")
    deny = page.get_by_test_id("deny-form")
    deny.get_by_label("Denial reason (CARC)").select_option("50")
    deny.get_by_label("Sentence for the provider").fill("The records do not show necessity.")
    deny.get_by_role("button", name="Deny").click()
    expect(page.get_by_test_id("decision-message")).to_contain_text("Denied")
    expect(page.locator("#claim-status")).to_have_text("DENIED")
    expect(page.get_by_test_id("history")).to_contain_text("CARC 50")
    assert page.evaluate("window.__stillHere") == "yes"  # swapped in place, no reload
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.DENIED


def test_a_refusal_is_shown_in_the_panel(page: Page, live_server) -> None:
    claim = decidable_claim()
    holder = user_with(Role.ADJUSTER)
    log_in(page, live_server.url, user_with(Role.ADJUSTER))
    open_claim(page, live_server.url, claim)
    from review import services

    services.claim_hold(claim_id=claim.pk, user=holder)  # meanwhile, someone takes it
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("decision-message")).to_contain_text(
        f"{holder.username} is reviewing this claim"
    )
    expect(page.get_by_test_id("held-by-other")).to_be_visible()
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.VERIFIED


def test_two_adjusters_approve_a_four_eyes_claim(browser: Browser, live_server) -> None:
    claim = decidable_claim(unit_price="600.00", procedures=2)
    users = [user_with(Role.ADJUSTER), user_with(Role.ADJUSTER)]
    contexts = [browser.new_context() for _ in users]
    try:
        first, second = (c.new_page() for c in contexts)
        log_in(first, live_server.url, users[0])
        open_claim(first, live_server.url, claim)
        first.get_by_role("button", name="Approve").click()
        expect(first.get_by_test_id("decision-message")).to_contain_text(
            "First approval recorded; 1 more needed"
        )
        expect(first.get_by_test_id("approve-form").get_by_role("button")).to_be_disabled()

        log_in(second, live_server.url, users[1])
        open_claim(second, live_server.url, claim)
        expect(second.get_by_test_id("approvals")).to_contain_text(users[0].username)
        second.get_by_role("button", name="Give the second approval").click()
        expect(second.get_by_test_id("decision-message")).to_contain_text("Approved; payout PO-")
        expect(second.get_by_test_id("payout")).to_contain_text("1200.00 USD")
        expect(second.locator("#claim-status")).to_have_text("APPROVED")
    finally:
        for c in contexts:
            c.close()
    assert Payout.objects.filter(claim=claim).count() == 1


def test_the_page_updates_when_verification_finishes(page: Page, live_server) -> None:
    kit = cf.make_provider()
    claim, _ = cf.claim_for(kit)
    log_in(page, live_server.url, user_with(Role.AUDITOR))
    open_claim(page, live_server.url, claim)
    expect(page.get_by_test_id("live-status")).to_be_visible()
    expect(page.locator("svg.proof-path")).to_have_count(0)
    cf.verified(claim)
    expect(page.locator("#claim-status")).to_have_text("VERIFIED")
    expect(page.get_by_test_id("live-status")).to_have_count(0)
    expect(page.locator("svg.proof-path")).to_have_count(1)
