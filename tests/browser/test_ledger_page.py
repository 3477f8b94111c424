"""The ledger page as a user sees it in Chromium: checkpoint, chart, and leaf lookups."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Browser, Page, expect

from ledger.models import Checkpoint, Leaf

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ledger_url(live_server) -> str:
    """The page of a demo log: 3 members, 12 leaves, cosigned checkpoints."""
    call_command("ledger_init", stdout=io.StringIO())
    call_command("ledger_demo", anchors=4, batches=2, stdout=io.StringIO())
    return f"{live_server.url}/ledger/"


def _look_up(page: Page, query: str) -> None:
    page.get_by_label("Leaf index, or leaf hash").fill(query)
    page.get_by_role("button", name="Look up").click()


def test_it_shows_the_final_checkpoint_its_cosigners_and_the_chart(
    page: Page, ledger_url: str, artifacts: Path
) -> None:
    page.goto(ledger_url)
    expect(page).to_have_title(re.compile("Ledger"))
    expect(page.get_by_test_id("tree-size")).to_have_text("12")
    expect(page.get_by_test_id("finality")).to_have_text("FINAL")
    cosigners = page.get_by_test_id("cosigners")
    for name in ("St Mary's Hospital", "North Laboratory", "Acme Insurance"):
        expect(cosigners).to_contain_text(name)
    expect(page.locator("svg.chart circle.point")).to_have_count(Checkpoint.objects.count())
    expect(page.locator("svg.chart")).to_contain_text("tree size (leaves)")
    page.get_by_text("Signed note, as C2SP writes it").click()
    expect(page.get_by_test_id("note-text")).to_contain_text("ledger.claimproof.example\n12\n")
    page.screenshot(path=artifacts / "ledger-page.png", full_page=True)


def test_lookup_by_index_swaps_in_the_verified_path_without_reloading(
    page: Page, ledger_url: str, artifacts: Path
) -> None:
    page.goto(ledger_url)
    page.evaluate("window.__stillHere = 'yes'")
    _look_up(page, "5")
    expect(page.get_by_test_id("verdict")).to_contain_text("Verified")
    expect(page.get_by_test_id("leaf-index")).to_have_text("5")
    expect(page.locator("svg.proof-path g.level")).to_have_count(4)
    expect(page.locator("svg.proof-path")).to_contain_text("✓ verified")
    assert page.evaluate("window.__stillHere") == "yes"  # htmx swapped a fragment, no reload
    assert page.url.endswith("?leaf=5")  # and pushed a URL that works on its own
    page.screenshot(path=artifacts / "ledger-lookup.png", full_page=True)


def test_lookup_by_hash_finds_the_leaf(page: Page, ledger_url: str) -> None:
    page.goto(ledger_url)
    _look_up(page, bytes(Leaf.objects.get(index=11).leaf_hash).hex())
    expect(page.get_by_test_id("leaf-index")).to_have_text("11")
    expect(page.get_by_test_id("verdict")).to_contain_text("Verified")
    expect(page.locator("svg.proof-path g.level")).to_have_count(3)


def test_a_bad_lookup_shows_why(page: Page, ledger_url: str) -> None:
    page.goto(ledger_url)
    page.evaluate("window.__stillHere = 'yes'")
    _look_up(page, "not-a-leaf")
    expect(page.get_by_role("alert")).to_contain_text("is neither a leaf index nor a leaf hash")
    _look_up(page, "400")
    expect(page.get_by_role("alert")).to_contain_text("The log has no leaf 400")
    expect(page.locator("svg.proof-path")).to_have_count(0)
    assert page.evaluate("window.__stillHere") == "yes"


def test_lookup_works_without_javascript(browser: Browser, ledger_url: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(ledger_url)
        _look_up(page, "0")
        expect(page.get_by_test_id("verdict")).to_contain_text("Verified")
        expect(page.get_by_test_id("tree-size")).to_have_text("12")  # a whole page came back
        assert "leaf=0" in page.url
    finally:
        context.close()
