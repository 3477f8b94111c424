"""The operators' jobs pages: verification jobs and payment runs, newest first, started from
here, followed live (htmx polls a progress fragment while a job runs and stops when it ends).

Operators (``RUN_JOBS``) start jobs and runs; auditors (``READ_JOBS``) see everything read-only.
The work is in ``jobs.services`` and ``payments.services``; views only read forms and render.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from claims.models import Provider
from config.errors import DomainError
from jobs import services
from jobs.models import BatchJob
from payments import services as payments
from payments.models import PaymentRun
from review.roles import Ability, requires

J = BatchJob.Status
RUNNING_JOB = frozenset({J.QUEUED, J.RUNNING})
RUNNING_RUN = frozenset({PaymentRun.Status.PLANNED, PaymentRun.Status.RUNNING})
BADGE = {
    "done": "ok",
    "settled": "ok",
    "queued": "warn",
    "planned": "warn",
    "running": "warn",
    "failed": "bad",
    "cancelled": "bad",
}
LIST_SIZE = 30


def clock(seconds: float | None) -> str:
    """``0:01:05`` for 65 seconds; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def decorate(progress: dict, *, running: bool) -> dict:
    """What every progress display shows besides the counters."""
    progress["running"] = running
    progress["badge"] = BADGE.get(progress["status"], "warn")
    progress["eta_text"] = clock(progress["eta_s"])
    progress["elapsed_text"] = clock(progress["elapsed_s"])
    return progress


# --- the form ----------------------------------------------------------------------------------


class JobStartForm(forms.Form):
    """Which claims to re-verify; ``build_scope()`` is what ``jobs.services.job_start`` takes."""

    SCOPES = [
        ("all", "Every claim"),
        ("provider", "One provider's claims"),
        ("kid", "Everything signed with one key"),
        ("dates", "Claims received in a date range"),
        ("checkpoint", "Claims proven against one checkpoint"),
    ]
    scope = forms.ChoiceField(choices=SCOPES, initial="all", widget=forms.RadioSelect)
    provider = forms.ModelChoiceField(
        queryset=Provider.objects.order_by("name"), required=False, empty_label="(choose)"
    )
    kid = forms.CharField(label="Key id", max_length=100, required=False)
    since = forms.DateField(
        label="Received from (UTC day)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    until = forms.DateField(
        label="Received up to (UTC day, inclusive)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    checkpoint = forms.IntegerField(label="Checkpoint tree size", min_value=1, required=False)
    reason = forms.CharField(max_length=300, required=False)

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("scope")
        if kind == "provider" and not data.get("provider"):
            self.add_error("provider", "Choose the provider.")
        if kind == "kid" and not data.get("kid"):
            self.add_error("kid", "Give the key id.")
        if kind == "checkpoint" and not data.get("checkpoint"):
            self.add_error("checkpoint", "Give the checkpoint's tree size.")
        if kind == "dates":
            since, until = data.get("since"), data.get("until")
            if not since and not until:
                self.add_error("since", "Give a first day, a last day, or both.")
            elif since and until and until < since:
                self.add_error("until", "The last day is before the first.")
        return data

    def build_scope(self) -> dict:
        data, kind = self.cleaned_data, self.cleaned_data["scope"]
        if kind == "all":
            return {"all": True}
        if kind == "provider":
            return {"provider": data["provider"].pk}
        if kind == "kid":
            return {"kid": data["kid"].strip()}
        if kind == "checkpoint":
            return {"checkpoint": data["checkpoint"]}
        scope = {}
        if data.get("since"):
            scope["since"] = datetime.combine(data["since"], time.min, tzinfo=UTC).isoformat()
        if data.get("until"):
            end = data["until"] + timedelta(days=1)
            scope["until"] = datetime.combine(end, time.min, tzinfo=UTC).isoformat()
        return scope


# --- pages -------------------------------------------------------------------------------------


def _rows() -> tuple[list[dict], bool]:
    """Jobs and payment runs, newest first, and whether any is still running."""
    rows = []
    job_list = list(BatchJob.objects.select_related("started_by")[:LIST_SIZE])
    wanted = {j.scope["provider"] for j in job_list if "provider" in j.scope}
    names = dict(Provider.objects.filter(pk__in=wanted).values_list("pk", "name"))
    for job in job_list:
        p = decorate(services.job_progress(job), running=job.status in RUNNING_JOB)
        p.update(
            kind="verification",
            url=reverse("jobs_pages:job", args=[job.pk]),
            what=_scope_text(job.scope, names),
            by=p["started_by"],
        )
        rows.append(p)
    for run in payments.runs()[:LIST_SIZE]:
        p = decorate(payments.payment_progress(run), running=run.status in RUNNING_RUN)
        p.update(
            kind="payment",
            url=reverse("payments:run", args=[run.pk]),
            what=f"payouts up to {run.period:%Y-%m-%d}",
            by=p["created_by"],
        )
        rows.append(p)
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    return rows[:LIST_SIZE], any(r["running"] for r in rows)


def _scope_text(scope: dict, names: dict[int, str] | None = None) -> str:
    """The scope in words; ``names`` are provider names by id (looked up when not given)."""
    if scope.get("all"):
        return "every claim"
    parts = []
    if "provider" in scope:
        if names is None:
            names = dict(Provider.objects.filter(pk=scope["provider"]).values_list("pk", "name"))
        parts.append(f"provider {names.get(scope['provider'], scope['provider'])}")
    if "kid" in scope:
        parts.append(f"key {scope['kid']}")
    if "since" in scope:
        parts.append(f"received from {scope['since'][:10]}")
    if "until" in scope:
        parts.append(f"received before {scope['until'][:10]}")
    if "checkpoint" in scope:
        parts.append(f"proven against checkpoint {scope['checkpoint']}")
    return ", ".join(parts) or str(scope)


def render_index(
    request: HttpRequest,
    *,
    job_form: JobStartForm | None = None,
    run_form: forms.Form | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    """The jobs page; the start views render it again, with the error, when a start fails."""
    from payments.views import PaymentRunForm

    rows, running = _rows()
    return render(
        request,
        "jobs/index.html",
        {
            "rows": rows,
            "running": running,
            "job_form": job_form or JobStartForm(),
            "run_form": run_form or PaymentRunForm(),
            "payable": payments.payable_summary(),
            "error": error,
        },
        status=status,
    )


@require_GET
@requires(Ability.READ_JOBS)
def index(request: HttpRequest) -> HttpResponse:
    return render_index(request)


@require_GET
@requires(Ability.READ_JOBS)
def index_list(request: HttpRequest) -> HttpResponse:
    """The list alone (htmx polls it while something runs)."""
    rows, running = _rows()
    return render(request, "jobs/_list.html", {"rows": rows, "running": running})


@require_POST
@requires(Ability.RUN_JOBS)
def start(request: HttpRequest) -> HttpResponse:
    form = JobStartForm(request.POST)
    if not form.is_valid():
        return render_index(request, job_form=form, status=422)
    try:
        job = services.job_start(
            form.build_scope(), request.user, reason=form.cleaned_data["reason"]
        )
    except DomainError as exc:
        return render_index(request, job_form=form, error=exc.detail, status=exc.status_code)
    return redirect("jobs_pages:job", job_id=job.pk)


def _job(job_id: int) -> BatchJob:
    job = BatchJob.objects.select_related("started_by").filter(pk=job_id).first()
    if job is None:
        raise Http404(f"no job {job_id}")
    return job


def _job_context(job: BatchJob, **extra) -> dict:
    progress = decorate(services.job_progress(job), running=job.status in RUNNING_JOB)
    return {"job": job, "p": progress, "scope_text": _scope_text(job.scope), **extra}


@require_GET
@requires(Ability.READ_JOBS)
def job(request: HttpRequest, job_id: int) -> HttpResponse:
    return render(request, "jobs/job.html", _job_context(_job(job_id)))


@require_GET
@requires(Ability.READ_JOBS)
def job_progress(request: HttpRequest, job_id: int) -> HttpResponse:
    """The live part of a job's page (htmx swaps it every second while the job runs)."""
    return render(request, "jobs/_job_progress.html", _job_context(_job(job_id)))


@require_POST
@requires(Ability.RUN_JOBS)
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """Cancel a queued or running job. With htmx the answer is the progress panel (with the
    message, 409 when the job had already ended); without, a redirect to the job's page, or
    the page with the message and 409."""
    found = _job(job_id)
    try:
        services.job_cancel(found, request.user, reason=request.POST.get("reason", "")[:300])
    except DomainError as exc:
        message, kind, status = exc.detail, "error", exc.status_code
    else:
        message, kind, status = (
            f"Job {found.pk} cancelled: chunks not started do nothing; "
            "a chunk under way stops after its current batch.",
            "ok",
            200,
        )
    found.refresh_from_db()
    context = _job_context(found, message=message, message_kind=kind)
    if getattr(request, "htmx", False):
        return render(request, "jobs/_job_progress.html", context, status=status)
    if status == 200:
        return redirect("jobs_pages:job", job_id=found.pk)
    return render(request, "jobs/job.html", context, status=status)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@requires(Ability.READ_JOBS)
def job_changes(request: HttpRequest, job_id: int) -> HttpResponse:
    """The claims whose verdict the job changed, as CSV (streamed)."""
    found = _job(job_id)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in services.job_changes_rows(found)),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="job-{found.pk}-changes.csv"'
    return response


urls = [
    path("", index, name="index"),
    path("list/", index_list, name="list"),
    path("start/", start, name="start"),
    path("<int:job_id>/", job, name="job"),
    path("<int:job_id>/progress/", job_progress, name="job-progress"),
    path("<int:job_id>/cancel/", job_cancel, name="job-cancel"),
    path("<int:job_id>/changes.csv", job_changes, name="job-changes"),
]
