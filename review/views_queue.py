"""The adjusters' work queue: filters, sorting, keyset pages, status counts, live status of
claims still being verified, and bulk approval. The query lives in ``review.queue``; the
decisions in ``review.services``; these views only parse, call and render.

htmx requests (filters, sorting, paging) get the results fragment and push their URL, so every
view of the queue can be bookmarked and opens as a full page.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, path, reverse
from django.views.decorators.http import require_GET, require_POST

from claims.models import Provider
from claims.states import ClaimStatus
from review import queue as q
from review.roles import Ability, can, requires
from review.services import claims_bulk_approve, four_eyes_above

BULK_MAX = 200


@cache
def _claim_url_pattern() -> str:
    """The claim page's URL with a hole for the id: one reverse, then string formatting."""
    marker = "00000000-0000-0000-0000-000000000000"
    try:
        return reverse("review:claim", kwargs={"public_id": marker}).replace(marker, "{}")
    except NoReverseMatch:  # the claim page is not routed yet: its documented address
        return "/claims/{}/"


def claim_url(public_id: object) -> str:
    """The claim's page (``review:claim``)."""
    return _claim_url_pattern().format(public_id)


def _row_context(request: HttpRequest) -> dict:
    return {
        "can_decide": can(request.user, Ability.DECIDE),
        "four_eyes_above": four_eyes_above(),
    }


def _with_urls(request: HttpRequest, rows: list[q.QueueRow]) -> list[q.QueueRow]:
    """Each row's link, whether the user may select it for bulk approval, and whether it is
    above the four-eyes amount (bulk approval would skip it)."""
    decide = can(request.user, Ability.DECIDE)
    above = four_eyes_above()
    for row in rows:
        row.url = claim_url(row.public_id)
        row.selectable = decide and row.status == ClaimStatus.VERIFIED
        row.four_eyes = row.claim.total is not None and row.claim.total > above
    return rows


def _sort_links(query: q.QueueQuery, base: str) -> dict[str, dict]:
    """Column headers: the sort each one switches to, and which one is on."""
    out = {}
    for column, (first, second) in {
        "created": ("newest", "oldest"),
        "amount": ("amount_desc", "amount_asc"),
    }.items():
        on = query.sort in (first, second)
        target = second if query.sort == first else first
        out[column] = {
            "url": query.url(base, sort=target, after=None, before=None),
            "on": on,
            "arrow": ("↓" if query.sort == first else "↑") if on else "",
            "aria": ("descending" if query.sort == first else "ascending") if on else "none",
        }
    return out


def _results_context(request: HttpRequest, query: q.QueueQuery, errors: list[str]) -> dict:
    try:
        page = q.queue_page(query)
    except q.StaleCursor:
        errors.append("That page of the queue no longer exists: here is the first page.")
        query = replace(query, after=None, before=None)
        page = q.queue_page(query)
    base = reverse("review:queue")
    live = page.live_ids
    return {
        **_row_context(request),
        "query": query,
        "errors": errors,
        "rows": _with_urls(request, page.rows),
        "page": page,
        "sorts": q.SORTS,
        "sort_links": _sort_links(query, base),
        "next_url": query.url(base, after=page.next_after, before=None) if page.next_after else "",
        "prev_url": query.url(base, before=page.prev_before, after=None)
        if page.prev_before
        else "",
        "live_url": _live_url(live),
        "first_page": query.after is None and query.before is None,
        "first_url": query.url(base, after=None, before=None),
    }


def _live_url(ids: list[int]) -> str:
    if not ids:
        return ""
    return f"{reverse('review:queue_live')}?ids={','.join(str(i) for i in ids)}"


@requires(Ability.READ_CLAIMS)
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    query, errors = q.queue_query_parse(request.GET)
    context = _results_context(request, query, errors)
    if request.htmx and not request.htmx.history_restore_request:
        response = render(request, "review/_queue_results.html", {**context, "oob": True})
        response["HX-Trigger"] = "queueChanged"  # the status counts follow the filters
        return response
    context.update(
        tabs=_tabs(None),
        providers=Provider.objects.order_by("name").values_list("id", "name"),
        statuses=ClaimStatus.choices,
        verdicts=q.VERDICTS,
        failed_checks=q.FAILED_CHECKS,
    )
    return render(request, "review/queue.html", context)


@requires(Ability.READ_CLAIMS)
@require_GET
def queue_counts(request: HttpRequest) -> HttpResponse:
    """How many claims of each status match the other filters: the tabs' count cells, out of
    band (the tabs themselves stay: a late answer never unchecks what the user just chose)."""
    query, _ = q.queue_query_parse(request.GET)
    return render(
        request,
        "review/_queue_count_values.html",
        {"query": query, "tabs": _tabs(q.status_counts(query))},
    )


def _count_text(count: int | None) -> str:
    if count is None:
        return "?"
    return f"{q.COUNT_CAP:,}+" if count >= q.COUNT_CAP else f"{count:,}"


def _tabs(counts: dict[str, int | None] | None) -> list[tuple[str, str, str]]:
    """(status, label, count text) for each status tab; "…" until the counts arrive."""
    choices = [("", "all"), *ClaimStatus.choices]
    if counts is None:
        return [(value, label, "…") for value, label in choices]
    return [(value, label, _count_text(counts[value])) for value, label in choices]


def _ids(values: list[str], limit: int) -> list[int]:
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part.isascii() and part.isdigit() and 1 <= int(part) <= q.MAX_ID:
                out.append(int(part))
    return list(dict.fromkeys(out))[:limit]


@requires(Ability.READ_CLAIMS)
@require_GET
def queue_live(request: HttpRequest) -> HttpResponse:
    """The current rows of claims that were being verified: out-of-band swaps for the table,
    and the poller again while any of them still is (none: polling stops)."""
    rows = q.queue_rows_by_id(_ids(request.GET.getlist("ids"), q.LIVE_MAX_IDS))
    still = [r.claim.pk for r in rows if r.transitional]
    return render(
        request,
        "review/_queue_live.html",
        {**_row_context(request), "rows": _with_urls(request, rows), "live_url": _live_url(still)},
    )


@requires(Ability.DECIDE)
@require_POST
def queue_bulk_approve(request: HttpRequest) -> HttpResponse:
    """Approve the selected claims (verified, at most the four-eyes amount) one by one and say
    what happened to each; the rows of the table follow out of band."""
    ids = _ids(request.POST.getlist("claim"), BULK_MAX + 1)
    context: dict = {**_row_context(request), "lines": [], "rows": [], "error": ""}
    if not ids:
        context["error"] = "Select at least one verified claim to approve."
    elif len(ids) > BULK_MAX:
        context["error"] = f"Approve at most {BULK_MAX} claims at a time."
    else:
        lines = claims_bulk_approve(claim_ids=ids, user=request.user)
        context["lines"] = lines
        context["approved"] = sum(1 for line in lines if line.ok)
        context["rows"] = _with_urls(request, q.queue_rows_by_id(ids))
    return render(request, "review/_queue_bulk_summary.html", context)


urls = [
    path("queue/", queue, name="queue"),
    path("queue/counts/", queue_counts, name="queue_counts"),
    path("queue/live/", queue_live, name="queue_live"),
    path("queue/bulk-approve/", queue_bulk_approve, name="queue_bulk_approve"),
]
