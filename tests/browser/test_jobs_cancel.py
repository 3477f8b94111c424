"""Cancelling a job in Chromium: the operator confirms, htmx swaps the progress panel (no
reload), the badge says CANCELLED and polling stops; an auditor has no Cancel button."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from audit.models import AuditEntry
from jobs.models import BatchJob
from review.roles import Role
from tests.payments.helpers import role_groups
from tests.review.factories import PASSWORD, user_with

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _log_in(page: Page, base: str, username: str, next_url: str) -> None:
    page.goto(f"{base}/login/?next={next_url}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}{next_url}")


def _queued_job() -> BatchJob:
    """A job waiting for a worker (none runs here: it stays queued until cancelled)."""
    return BatchJob.objects.create(kind=BatchJob.Kind.VERIFY, scope={"all": True}, reason="nightly")


def test_an_operator_cancels_a_job_from_its_page(page: Page, live_server) -> None:
    role_groups()
    job = _queued_job()
    operator = user_with(Role.OPERATOR)
    _log_in(page, live_server.url, operator.username, f"/jobs/{job.pk}/")
    expect(page.get_by_test_id("status")).to_have_text("QUEUED")
    page.evaluate("window.__stillHere = 'yes'")
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_test_id("status")).to_have_text("CANCELLED")
    expect(page.get_by_test_id("cancel-message")).to_contain_text(f"Job {job.pk} cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_test_id("live")).to_have_attribute("data-running", "no")
    assert dialogs and f"Cancel job {job.pk}?" in dialogs[0]
    assert page.evaluate("window.__stillHere") == "yes"  # swapped by htmx, not reloaded
    assert BatchJob.objects.get(pk=job.pk).status == BatchJob.Status.CANCELLED
    assert AuditEntry.objects.get(action="job.cancel").actor_id == operator.pk


def test_an_auditor_has_no_cancel_button(page: Page, live_server) -> None:
    role_groups()
    job = _queued_job()
    auditor = user_with(Role.AUDITOR)
    _log_in(page, live_server.url, auditor.username, f"/jobs/{job.pk}/")
    expect(page.get_by_test_id("status")).to_have_text("QUEUED")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
