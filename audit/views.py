"""The auditor's read-only page: browse the trail, and verify it on demand."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from audit import selectors
from audit.verify import audit_verify
from review.roles import Ability, requires


def _before(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None


def _page_context(request: HttpRequest) -> dict:
    error = None
    try:
        trail_filter = selectors.filter_parse(request.GET)
    except selectors.FilterError as exc:
        error, trail_filter = str(exc), selectors.TrailFilter()
    page = selectors.trail_page(trail_filter, before=_before(request.GET.get("before", "")))
    return {
        "filter": trail_filter,
        "filter_error": error,
        "page": page,
        "next_url": (
            "?" + urlencode({**trail_filter.query(), "before": page.next_before})
            if page.next_before
            else None
        ),
        "first_url": "?" + urlencode(trail_filter.query()),
        "summary": selectors.trail_summary(),
    }


@require_GET
@vary_on_headers("HX-Request")
@requires(Ability.READ_AUDIT)
def trail(request: HttpRequest) -> HttpResponse:
    """The trail, newest first, filtered by action, actor, target and dates."""
    return render(request, "audit/trail.html", _page_context(request))


@require_POST
@requires(Ability.READ_AUDIT)
def verify(request: HttpRequest) -> HttpResponse:
    """Run the verification (reads only); htmx gets the result panel, a plain form the page."""
    report = audit_verify()
    if getattr(request, "htmx", False):
        return render(request, "audit/_verify_result.html", {"report": report})
    return render(request, "audit/trail.html", {**_page_context(request), "report": report})
