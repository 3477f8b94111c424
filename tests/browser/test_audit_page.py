"""The audit trail as an auditor sees it in Chromium: log in, browse, filter, follow an anchor to
the ledger, verify the trail, and see an alteration caught."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from audit.models import ChainAnchor
from review.roles import Role
from tests.audit import helpers as h
from tests.review.factories import PASSWORD, user_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def auditor_page(page: Page, live_server) -> Page:
    for role in Role:  # a transactional test's flush empties the groups the migration made
        Group.objects.get_or_create(name=role.value)
    h.two_anchor_trail()
    h.record(1, why="written after the last seal")
    auditor = user_with(Role.AUDITOR)
    page.goto(f"{live_server.url}/audit/")
    page.get_by_label("Username").fill(auditor.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_title(re.compile("Audit trail"))
    page.live_url = live_server.url
    return page


def test_an_auditor_browses_verifies_and_sees_an_alteration_caught(
    auditor_page: Page, artifacts: Path
) -> None:
    page = auditor_page
    expect(page.get_by_role("link", name="Audit trail")).to_have_attribute("aria-current", "page")
    rows = page.get_by_test_id("entry")
    expect(rows).to_have_count(9)
    expect(rows.first).to_contain_text("written after the last seal")  # newest first
    expect(rows.first.get_by_test_id("status")).to_have_text("PENDING")
    expect(rows.nth(1).get_by_test_id("status")).to_have_text("ANCHORED")

    page.get_by_test_id("f-action").fill("claim.deny")
    page.get_by_test_id("filter").click()
    expect(rows).to_have_count(3)
    expect(page).to_have_url(re.compile(r"action=claim\.deny"))

    page.get_by_test_id("verify").click()
    expect(page.get_by_test_id("verify-ok")).to_contain_text(
        "Entries #1 to #8 are anchored and unaltered"
    )
    expect(rows).to_have_count(3)  # htmx swapped the panel; the filtered list stays
    page.screenshot(path=artifacts / "audit-trail.png", full_page=True)

    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_auditentry SET why = 'covered after all' WHERE seq = 5")
    page.get_by_test_id("verify").click()
    expect(page.get_by_test_id("verify-bad")).to_contain_text("First bad entry: entry #5 (id")
    page.screenshot(path=artifacts / "audit-trail-altered.png", full_page=True)

    leaf = ChainAnchor.objects.get(seq=6).leaf_index
    rows.first.get_by_test_id("leaf-link").click()
    expect(page).to_have_url(re.compile(rf"/ledger/\?leaf={leaf}$"))
    expect(page.get_by_test_id("verdict")).to_contain_text("Verified")
