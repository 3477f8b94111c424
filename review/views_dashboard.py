"""The dashboard adjusters land on after logging in: counters now, and four charts over a
period of 7, 30 or 90 days (htmx swaps the charts when the period or the claims shown by the
status chart change; without JavaScript the form reloads the page). The figures come from
``review.dashboard``; this module only turns them into SVG and tables."""

from __future__ import annotations

from datetime import date

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from claims.states import ClaimStatus
from review import charts
from review import dashboard as figures
from review.roles import Ability, requires

CHARTS_ID = "dashboard-charts"  # the element htmx swaps


def _svg(markup: str) -> SafeString:
    # review.charts escapes every value it interpolates.
    return mark_safe(markup)  # noqa: S308


def _span(win: figures.Window) -> str:
    return f"{win.first:%Y-%m-%d} to {win.today:%Y-%m-%d} (UTC)"


def _status_chart(data: figures.Dashboard, scope: str) -> tuple[SafeString, list[charts.Series]]:
    history, win = data.history, data.window
    labels = {s.status: s.label for s in data.statuses}
    shown = figures.OPEN_STATUSES if scope == "open" else figures.STATUS_ORDER
    series = [
        charts.Series(s, labels[s], history.counts[s], charts.STATUS_COLORS[s])
        for s in shown
        if any(history.counts[s])
    ]
    last = ", ".join(f"{s.label} {s.values[-1]:,}" for s in series if s.values[-1])
    which = "Open claims" if scope == "open" else "Claims"
    svg = charts.stacked_bars_svg(
        chart_id="chart-status",
        title=f"{which} by status at the end of each day, last {win.days} days",
        desc=f"Stacked bars, one per day from {_span(win)}. "
        + (f"At the end of today: {last}." if last else f"No {which.lower()} in this period."),
        dates=history.dates,
        series=series,
        y_label="claims",
        empty=f"No {which.lower()} in this period",
    )
    return _svg(svg), series


def _latency_chart(data: figures.Dashboard) -> SafeString:
    win = data.window
    by_day = {d.day: d for d in data.latency}
    p50 = [by_day[d].p50_s if d in by_day else None for d in win.dates]
    p95 = [by_day[d].p95_s if d in by_day else None for d in win.dates]
    count = sum(d.count for d in data.latency)
    svg = charts.lines_svg(
        chart_id="chart-latency",
        title=f"Verification latency per day (median and 95th percentile), last {win.days} days",
        desc=f"Time from receipt to the first verdict of {count:,} claim"
        f"{'s' if count != 1 else ''} verified from {_span(win)}; a day without verdicts has "
        "no point.",
        dates=win.dates,
        series=[
            charts.Series("p50", "median", p50, charts.SERIES_COLORS[0]),
            charts.Series("p95", "95th percentile", p95, charts.SERIES_COLORS[1]),
        ],
        y_label="time to verdict",
        fmt=charts.fmt_duration,
        empty="No claims verified in this period",
    )
    return _svg(svg)


def _rejects_chart(data: figures.Dashboard) -> SafeString:
    rejects, win = data.rejects, data.window
    svg = charts.hbars_svg(
        chart_id="chart-rejects",
        title=f"Reject reasons, last {win.days} days",
        desc=f"The checks that failed in the latest run of the {rejects.claims:,} claim"
        f"{'s' if rejects.claims != 1 else ''} rejected from {_span(win)}, most frequent "
        "first; a claim can fail several checks.",
        rows=[(r.label, r.claims) for r in rejects.reasons],
        empty="No claims rejected in this period",
    )
    return _svg(svg)


def _payout_charts(data: figures.Dashboard) -> list[dict]:
    win, out = data.window, []
    for i, cur in enumerate(data.payouts):
        code = cur.currency
        svg = charts.stacked_bars_svg(
            chart_id=f"chart-payouts-{code.lower()}",
            title=f"Payouts per day in {code}, last {win.days} days",
            desc=f"{cur.count:,} payout{'s' if cur.count != 1 else ''} totalling "
            f"{cur.amount:,.2f} {code} created from {_span(win)}, one bar per day.",
            dates=win.dates,
            series=[
                charts.Series(
                    code,
                    f"{code} paid out",
                    [float(d.amount) for d in cur.days],
                    charts.SERIES_COLORS[(i + 2) % len(charts.SERIES_COLORS)],
                )
            ],
            y_label=f"amount ({code})",
            fmt=charts.fmt_amount,
        )
        out.append(
            {
                "currency": code,
                "svg": _svg(svg),
                "count": cur.count,
                "amount": cur.amount,
                "days": [d for d in cur.days if d.count],
            }
        )
    return out


def _context(days: int, scope: str) -> dict:
    data = figures.dashboard(days)
    status_svg, status_series = _status_chart(data, scope)
    history_rows: list[tuple[date, list[int], int]] = []
    for i, d in enumerate(data.history.dates):
        values = [int(s.values[i] or 0) for s in status_series]
        history_rows.append((d, values, sum(values)))
    total_rejected = data.rejects.claims
    return {
        "data": data,
        "days": days,
        "periods": figures.PERIODS,
        "scope": scope,
        "open_labels": ", ".join(ClaimStatus(s).label for s in figures.OPEN_STATUSES),
        "span": _span(data.window),
        "charts_id": CHARTS_ID,
        "status_tiles": [
            {
                "status": s.status,
                "label": s.label,
                "count": s.count,
                "color": charts.STATUS_COLORS[s.status],
            }
            for s in data.statuses
        ],
        "status_svg": status_svg,
        "status_series": status_series,
        "history_rows": list(reversed(history_rows)),  # newest first in the table
        "latency_svg": _latency_chart(data),
        "latency_rows": [
            {
                "day": d.day,
                "count": d.count,
                "p50_label": charts.fmt_duration(d.p50_s),
                "p95_label": charts.fmt_duration(d.p95_s),
            }
            for d in reversed(data.latency)
        ],
        "rejects_svg": _rejects_chart(data),
        "reject_rows": [
            (r, round(100 * r.claims / total_rejected) if total_rejected else 0)
            for r in data.rejects.reasons
        ],
        "payouts": _payout_charts(data),
        "latency_series": [
            ("median (solid line)", charts.SERIES_COLORS[0]),
            ("95th percentile (dashed line)", charts.SERIES_COLORS[1]),
        ],
    }


@require_GET
@vary_on_headers("HX-Request")
@requires(Ability.DASHBOARD)
def dashboard(request: HttpRequest) -> HttpResponse:
    """The page; for an htmx request aimed at the charts, only the charts of the period."""
    errors, days, scope = [], figures.DEFAULT_PERIOD, "open"
    try:
        days = figures.parse_period(request.GET.get("days"))
    except figures.PeriodError as exc:
        errors.append(str(exc))
    try:
        scope = figures.parse_scope(request.GET.get("statuses"))
    except figures.PeriodError as exc:
        errors.append(str(exc))
    context = {**_context(days, scope), "error": " ".join(errors)}
    status = 400 if errors else 200
    htmx = getattr(request, "htmx", None)
    if htmx and htmx.target == CHARTS_ID:
        return render(request, "review/_dashboard_charts.html", context, status=status)
    return render(request, "review/dashboard.html", context, status=status)


urls = [path("", dashboard, name="dashboard")]
