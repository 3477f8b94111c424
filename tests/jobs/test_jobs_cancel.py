"""Cancelling a job: from the job's page (operators, POST with the CSRF token, htmx or not),
from ``manage.py verify_claims --cancel``; a cancelled job's chunks do nothing when they are
delivered, and a chunk under way stops after its batch. Real claims, PostgreSQL."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEntry
from claims.models import Claim
from config.errors import Conflict
from jobs import services as jobs
from jobs.models import BatchChunk, BatchJob, BatchResult
from review.roles import Role
from tests.claims.factories import make_provider
from tests.jobs.test_jobs_pages import client_for, run_inline, verified_claims
from tests.review.factories import user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
J = BatchJob.Status


def planned(job: BatchJob) -> list[int]:
    chunks: list[int] = []
    jobs.job_plan(job.pk, dispatch=chunks.append)
    return chunks


def runs(claims) -> dict[int, int]:
    return dict(
        Claim.objects.filter(pk__in=[c.pk for c in claims]).values_list("pk", "verification_runs")
    )


def test_the_chunks_of_a_cancelled_job_do_nothing_when_they_are_delivered(settings):
    settings.JOBS_CHUNK_SIZE = 2
    claims = verified_claims(make_provider(), 5)
    job = jobs.job_start({"all": True}, None, reason="nightly")
    first, *rest = planned(job)
    jobs.chunk_process(first)
    jobs.job_cancel(job, None, reason="wrong scope")
    for chunk_id in rest:  # delivered after the cancel (and again, as a redelivery would)
        jobs.chunk_process(chunk_id)
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.status, job.done, job.total, job.chunks_done) == (J.CANCELLED, 2, 5, 1)
    assert job.finished_at is not None
    assert BatchResult.objects.filter(job=job).count() == 2
    assert sorted(runs(claims).values()) == [1, 1, 1, 2, 2]  # three claims left as they were
    left = BatchChunk.objects.filter(pk__in=rest)
    assert {(c.status, c.attempts) for c in left} == {(BatchChunk.Status.PENDING, 0)}
    entry = AuditEntry.objects.get(action="job.cancel", target=f"job:{job.pk}")
    assert entry.why == "wrong scope" and entry.data == {"done": 2, "total": 5}
    # The planner delivered again does not revive it; the sweeper leaves it alone.
    assert jobs.job_plan(job.pk, dispatch=lambda _: None).status == J.CANCELLED
    assert jobs.jobs_to_sweep(older_than_s=-60) == ([], [])


def test_a_chunk_under_way_stops_after_its_batch(settings, monkeypatch):
    settings.JOBS_CHUNK_SIZE, settings.JOBS_VERIFY_BATCH = 4, 2
    claims = verified_claims(make_provider(), 4)
    job = jobs.job_start({"all": True})
    [chunk_id] = planned(job)
    batch = jobs._reverify_batch

    def then_cancelled(job_, chunk, ids):  # an operator cancels while the first batch runs
        batch(job_, chunk, ids)
        if not BatchJob.objects.filter(pk=job_.pk, status=J.CANCELLED).exists():
            jobs.job_cancel(job_)

    monkeypatch.setattr(jobs, "_reverify_batch", then_cancelled)
    jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert job.status == J.CANCELLED
    assert BatchResult.objects.filter(job=job).count() == 2
    assert sorted(runs(claims).values()) == [1, 1, 2, 2]
    assert BatchChunk.objects.get(pk=chunk_id).status == BatchChunk.Status.PENDING


def test_cancelling_a_job_that_ended_is_a_conflict():
    job = run_inline(jobs.job_start({"all": True}))
    assert job.status == J.DONE
    with pytest.raises(Conflict) as refused:
        jobs.job_cancel(job)
    assert refused.value.code == "job_finished" and "already ended (done)" in refused.value.detail


def _token(html: str) -> str:
    form = html[html.index('data-testid="cancel-form"') :]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)


def test_an_operator_cancels_from_the_job_page_with_the_csrf_token():
    job = jobs.job_start({"all": True}, None, reason="nightly")
    operator = client_for(Role.OPERATOR, enforce_csrf_checks=True)
    page = operator.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-testid="cancel"' in page and "Cancel job" in page
    url = f"/jobs/{job.pk}/cancel/"
    assert operator.post(url).status_code == 403  # no token: a forged post
    assert BatchJob.objects.get(pk=job.pk).status == J.QUEUED

    answer = operator.post(url, {"csrfmiddlewaretoken": _token(page)})
    assert answer.status_code == 302 and answer["Location"] == f"/jobs/{job.pk}/"
    page = operator.get(f"/jobs/{job.pk}/").content.decode()
    assert "CANCELLED" in page and 'data-testid="cancelled-note"' in page
    assert 'data-testid="cancel"' not in page  # nothing left to cancel
    assert 'hx-trigger="every 1s"' not in page  # polling stops

    again = operator.post(url, {"csrfmiddlewaretoken": _token_from_cookie(operator)})
    assert again.status_code == 409
    html = again.content.decode()
    assert "has already ended (cancelled): there is nothing to cancel" in html
    assert "<html" in html.lower()  # the whole page, with the message


def _token_from_cookie(client: Client) -> str:
    return client.cookies["csrftoken"].value


def test_with_htmx_the_answer_is_the_progress_panel_and_a_finished_job_says_so():
    running = jobs.job_start({"all": True})
    operator = client_for(Role.OPERATOR)
    answer = operator.post(f"/jobs/{running.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert answer.status_code == 200
    html = answer.content.decode()
    assert html.lstrip().startswith('<section class="card" id="job-progress"')
    assert "CANCELLED" in html and f"Job {running.pk} cancelled" in html
    assert "hx-trigger" not in html

    done = run_inline(jobs.job_start({"all": True}))
    late = operator.post(f"/jobs/{done.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert late.status_code == 409
    html = late.content.decode()
    assert 'role="alert"' in html and "already ended (done)" in html
    assert "DONE" in html
    assert BatchJob.objects.get(pk=done.pk).status == J.DONE


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADJUSTER])
def test_only_operators_cancel(role):
    job = jobs.job_start({"all": True})
    client = client_for(role)
    if role == Role.AUDITOR:
        assert 'data-testid="cancel"' not in client.get(f"/jobs/{job.pk}/").content.decode()
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert client_for(Role.OPERATOR).get(f"/jobs/{job.pk}/cancel/").status_code == 405
    assert client_for(Role.OPERATOR).post("/jobs/999999/cancel/").status_code == 404
    assert BatchJob.objects.get(pk=job.pk).status == J.QUEUED


def test_the_command_cancels_and_says_when_there_is_nothing_to_cancel():
    job = jobs.job_start({"all": True})
    out = io.StringIO()
    call_command("verify_claims", "--cancel", str(job.pk), "--reason", "by mistake", stdout=out)
    assert out.getvalue().strip() == f"job {job.pk} cancelled after 0 of 0 claims"
    assert AuditEntry.objects.get(action="job.cancel").why == "by mistake"
    with pytest.raises(CommandError, match="already ended"):
        call_command("verify_claims", "--cancel", str(job.pk))
    with pytest.raises(CommandError, match="no job 999999"):
        call_command("verify_claims", "--cancel", "999999")


def test_staff_cancel_through_the_api():
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    job = jobs.job_start({"all": True})
    staff, other = APIClient(), APIClient()
    staff.force_authenticate(get_user_model().objects.create_user("ops", is_staff=True))
    other.force_authenticate(user_with())
    url = f"/api/v1/jobs/{job.pk}/cancel"
    assert other.post(url, {}, format="json").status_code == 403
    answer = staff.post(url, {"reason": "wrong scope"}, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert AuditEntry.objects.get(action="job.cancel").why == "wrong scope"
    again = staff.post(url, {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "job_finished"
    assert staff.post("/api/v1/jobs/999999/cancel", {}, format="json").status_code == 404
