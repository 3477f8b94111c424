"""The jobs pages through Django's test client, per role: operators start verification jobs
and payment runs, auditors read everything and start nothing, adjusters and providers are
refused; a job's page shows live progress (htmx polls while it runs and stops when it is done)
and exports the changed verdicts. Real claims, PostgreSQL."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from jobs import services as jobs
from jobs.models import BatchJob
from ledger import services as ledger
from payments.models import PaymentRun
from review.roles import Role
from tests.claims.factories import anchor_procedure, claim_for, make_provider, procedure, verified
from tests.review.factories import user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def client_for(*roles: Role, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user_with(*roles))
    return client


def verified_claims(kit, n: int) -> list:
    """``n`` claims by ``kit``, each billing its own Procedure (one seal for all), verified."""
    anchored = [
        anchor_procedure(procedure(), kit.provider.member.name, seal=False) for _ in range(n)
    ]
    ledger.ledger_seal_and_cosign()
    return [verified(claim_for(kit, [a])[0]) for a in anchored]


def run_inline(job: BatchJob) -> BatchJob:
    chunks: list[int] = []
    jobs.job_plan(job.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    return job


def test_an_operator_sees_the_start_forms_and_the_list():
    page = client_for(Role.OPERATOR).get("/jobs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Start verification job" in html and "Start payment run" in html
    assert html.count('name="csrfmiddlewaretoken"') >= 3  # both forms and the logout form
    assert "No jobs or payment runs yet." in html


def test_an_auditor_reads_everything_and_starts_nothing():
    job = jobs.job_start({"all": True}, None, reason="nightly")
    auditor = client_for(Role.AUDITOR)
    page = auditor.get("/jobs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f"Verification job {job.pk}" in html
    assert "Start verification job" not in html and "Start payment run" not in html
    assert auditor.get(f"/jobs/{job.pk}/").status_code == 200
    assert auditor.get(f"/jobs/{job.pk}/changes.csv").status_code == 200
    assert auditor.post("/jobs/start/", {"scope": "all"}).status_code == 403
    assert auditor.post("/payments/runs/", {"period": "2026-01-01"}).status_code == 403
    assert BatchJob.objects.count() == 1 and not PaymentRun.objects.exists()


@pytest.mark.parametrize("role", [Role.ADJUSTER, Role.SENIOR_ADJUSTER])
def test_adjusters_are_refused(role):
    job = jobs.job_start({"all": True}, None)
    client = client_for(role)
    for url in ("/jobs/", f"/jobs/{job.pk}/", f"/jobs/{job.pk}/progress/", "/jobs/list/"):
        assert client.get(url).status_code == 403, url
    assert client.get(f"/jobs/{job.pk}/changes.csv").status_code == 403
    assert client.post("/jobs/start/", {"scope": "all"}).status_code == 403
    assert client.post("/payments/runs/", {"period": "2026-01-01"}).status_code == 403
    assert BatchJob.objects.count() == 1 and not PaymentRun.objects.exists()


def test_providers_and_strangers_are_refused(client):
    kit = make_provider()
    client.force_login(kit.user)
    assert client.get("/jobs/").status_code == 403
    assert client.post("/jobs/start/", {"scope": "all"}).status_code == 403
    anonymous = Client()
    response = anonymous.get("/jobs/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/jobs/"
    assert anonymous.post("/jobs/start/", {"scope": "all"}).status_code == 302
    assert not BatchJob.objects.exists()


def test_an_operator_starts_a_job_for_one_provider():
    kit = make_provider()
    operator = client_for(Role.OPERATOR)
    response = operator.post(
        "/jobs/start/", {"scope": "provider", "provider": kit.provider.pk, "reason": "audit"}
    )
    job = BatchJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.scope == {"provider": kit.provider.pk} and job.reason == "audit"
    assert job.started_by.groups.filter(name="operator").exists()
    page = operator.get(response["Location"]).content.decode()
    assert f"provider {kit.provider.name}" in page


def test_a_date_range_covers_whole_utc_days():
    operator = client_for(Role.OPERATOR)
    operator.post("/jobs/start/", {"scope": "dates", "since": "2026-11-01", "until": "2026-11-02"})
    assert BatchJob.objects.get().scope == {
        "since": "2026-11-01T00:00:00+00:00",
        "until": "2026-11-03T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"scope": "kid", "kid": "nope"}, "no provider key &#x27;nope&#x27;"),
        ({"scope": "provider"}, "Choose the provider."),
        ({"scope": "dates"}, "Give a first day, a last day, or both."),
        ({"scope": "dates", "since": "2026-11-05", "until": "2026-11-01"}, "before the first"),
        ({"scope": "checkpoint", "checkpoint": "x"}, "Enter a whole number."),
        ({"scope": "everything"}, "Select a valid choice."),
    ],
)
def test_bad_scopes_are_explained_and_start_nothing(form, message):
    response = client_for(Role.OPERATOR).post("/jobs/start/", form)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not BatchJob.objects.exists()


def test_forms_need_the_csrf_token():
    operator = client_for(Role.OPERATOR, enforce_csrf_checks=True)
    assert operator.post("/jobs/start/", {"scope": "all"}).status_code == 403
    assert operator.post("/payments/runs/", {"period": "2026-01-01"}).status_code == 403
    assert not BatchJob.objects.exists() and not PaymentRun.objects.exists()
    html = operator.get("/jobs/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    response = operator.post("/jobs/start/", {"scope": "all", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and BatchJob.objects.count() == 1


def test_a_running_job_polls_and_a_finished_one_stops(settings):
    settings.JOBS_CHUNK_SIZE = 2
    kit = make_provider()
    verified_claims(kit, 3)
    job = jobs.job_start({"all": True}, None)
    operator = client_for(Role.OPERATOR)
    fragment = operator.get(f"/jobs/{job.pk}/progress/", headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert 'hx-trigger="every 1s"' in html and f'hx-get="/jobs/{job.pk}/progress/"' in html
    assert 'data-testid="percent">0.0%' in html and "QUEUED" in html
    listing = operator.get("/jobs/list/").content.decode()
    assert 'hx-trigger="every 2s"' in listing  # the list follows running jobs too

    run_inline(job)
    html = operator.get(f"/jobs/{job.pk}/progress/").content.decode()
    assert "hx-trigger" not in html and "DONE" in html
    assert 'data-testid="percent">100.0%' in html
    assert 'data-testid="passed">3<' in html and 'data-testid="changed">0<' in html
    assert 'aria-valuenow="100.0"' in html
    assert f'href="/jobs/{job.pk}/changes.csv"' in html
    assert "hx-trigger" not in operator.get("/jobs/list/").content.decode()
    page = operator.get(f"/jobs/{job.pk}/").content.decode()
    assert "ETA 0:00:00" in re.sub(r"<[^>]+>", "", page)


def test_the_changed_verdicts_csv_from_the_page():
    job = jobs.job_start({"all": True}, None)
    response = client_for(Role.OPERATOR).get(f"/jobs/{job.pk}/changes.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert b"".join(response.streaming_content).startswith(b"claim,provider,kid,old_verdict")


def test_unknown_jobs_are_404():
    operator = client_for(Role.OPERATOR)
    assert operator.get("/jobs/999999/", headers={"Accept": "text/html"}).status_code == 404
    assert operator.get("/jobs/999999/changes.csv").status_code == 404


def test_the_list_holds_jobs_and_payment_runs_newest_first():
    first = jobs.job_start({"all": True}, None)
    from payments.services import payment_run_start

    run = payment_run_start(None, None)
    second = jobs.job_start({"all": True}, None)
    html = client_for(Role.AUDITOR).get("/jobs/").content.decode()
    order = re.findall(r"(Verification job|Payment run) (\d+)</a>", html)
    assert order == [
        ("Verification job", str(second.pk)),
        ("Payment run", str(run.pk)),
        ("Verification job", str(first.pk)),
    ]


def test_the_list_costs_the_same_queries_however_many_jobs_it_shows():
    from datetime import timedelta

    from django.utils import timezone

    from payments.services import payment_run_start

    kit = make_provider()
    auditor = client_for(Role.AUDITOR)

    def queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            assert auditor.get("/jobs/").status_code == 200
        return len(ctx.captured_queries)

    jobs.job_start({"provider": kit.provider.pk}, None)
    payment_run_start(timezone.now().date(), None)
    few = queries()
    for days in range(1, 6):
        jobs.job_start({"provider": kit.provider.pk}, None)
        payment_run_start(timezone.now().date() - timedelta(days=days), None)
    assert queries() == few
