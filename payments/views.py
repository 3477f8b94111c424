"""Payment run pages: start a run (operators), follow it live, export its remittance as CSV and
as one FHIR R4 PaymentReconciliation per provider. The list is on the jobs page (/jobs/)."""

from __future__ import annotations

import csv

from django import forms
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from claims.api import fhir_response
from config.errors import DomainError, error_body
from payments import services
from payments.models import PaymentRun, PaymentRunItem
from review.roles import Ability, requires

ITEMS_SHOWN = 50


class PaymentRunForm(forms.Form):
    period = forms.DateField(
        label="Pay approvals up to (UTC day)",
        widget=forms.DateInput(attrs={"type": "date"}),
        initial=lambda: timezone.now().date(),
    )
    reason = forms.CharField(max_length=300, required=False)


@require_POST
@requires(Ability.RUN_JOBS)
def run_start(request: HttpRequest) -> HttpResponse:
    from jobs.views import render_index

    form = PaymentRunForm(request.POST)
    if not form.is_valid():
        return render_index(request, run_form=form, status=422)
    try:
        run = services.payment_run_start(
            form.cleaned_data["period"], request.user, reason=form.cleaned_data["reason"]
        )
    except DomainError as exc:
        return render_index(request, run_form=form, error=exc.detail, status=exc.status_code)
    return redirect("payments:run", run_id=run.pk)


def _run(run_id: int) -> PaymentRun:
    run = PaymentRun.objects.select_related("created_by").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"no payment run {run_id}")
    return run


def _context(run: PaymentRun) -> dict:
    from jobs.views import RUNNING_RUN, decorate

    finished = run.status in services.FINISHED
    items = (
        PaymentRunItem.objects.filter(run=run)
        .select_related("payout__claim", "payout__payee")
        .order_by("payout_id")[:ITEMS_SHOWN]
    )
    return {
        "run": run,
        "p": decorate(services.payment_progress(run), running=run.status in RUNNING_RUN),
        "finished": finished,
        "providers": services.run_providers(run) if finished else [],
        "items": items,
        "items_shown": ITEMS_SHOWN,
    }


@require_GET
@requires(Ability.READ_JOBS)
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    return render(request, "payments/run.html", _context(_run(run_id)))


@require_GET
@requires(Ability.READ_JOBS)
def run_progress(request: HttpRequest, run_id: int) -> HttpResponse:
    """The live part of the run's page (htmx swaps it every second while the run runs)."""
    return render(request, "payments/_run_progress.html", _context(_run(run_id)))


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@requires(Ability.READ_JOBS)
def remittance_csv(request: HttpRequest, run_id: int) -> HttpResponse:
    """One line per payout of the run (streamed)."""
    run = _run(run_id)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in services.remittance_rows(run)),
        content_type="text/csv; charset=utf-8",
    )
    name = f"payment-run-{run.pk}-{run.period:%Y-%m-%d}-remittance.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
@requires(Ability.READ_JOBS)
def payment_reconciliation(request: HttpRequest, run_id: int, provider_id: int) -> HttpResponse:
    """What the run paid one provider, as FHIR R4 PaymentReconciliation
    (``application/fhir+json``); ``?currency=`` when it was paid in several."""
    run = _run(run_id)
    try:
        resource = services.payment_reconciliation(
            run, provider_id, request.GET.get("currency", "")
        )
    except DomainError as exc:
        return JsonResponse(error_body(exc.code, exc.detail), status=exc.status_code)
    response = fhir_response(resource)
    name = f"payment-run-{run.pk}-provider-{provider_id}-{resource['paymentAmount']['currency']}"
    response["Content-Disposition"] = f'inline; filename="{name}.json"'
    return response


urls = [
    path("runs/", run_start, name="run-start"),
    path("runs/<int:run_id>/", run_page, name="run"),
    path("runs/<int:run_id>/progress/", run_progress, name="run-progress"),
    path("runs/<int:run_id>/remittance.csv", remittance_csv, name="run-remittance"),
    path(
        "runs/<int:run_id>/providers/<int:provider_id>/PaymentReconciliation",
        payment_reconciliation,
        name="run-fhir",
    ),
]
