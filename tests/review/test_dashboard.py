"""The dashboard: its figures on known data, who may see it, and what the page says.

Claims, events, checks and payouts are written straight through the models with known dates:
how they come about (intake, verification, decisions) is tested elsewhere.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from claims.models import Claim, ClaimCheck, ClaimEvent, Provider
from claims.states import ClaimStatus
from ledger.models import Member
from review import charts
from review import dashboard as figures
from review.models import Payout
from review.roles import Role
from tests.review.factories import PASSWORD, user_with

pytestmark = pytest.mark.django_db
S = ClaimStatus
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
_n = itertools.count(1)


def day(offset: int, hour: int = 9, minute: int = 0, second: int = 0, base=NOW) -> datetime:
    """``offset`` days from ``base``'s day (0: that day), at the given UTC time."""
    d = base.replace(hour=hour, minute=minute, second=second, microsecond=0)
    return d + timedelta(days=offset)


@pytest.fixture
def provider() -> Provider:
    member = Member.objects.create(name=f"dash-{next(_n)}.example")
    return Provider.objects.create(name="Dash Hospital", member=member)


def claim(provider: Provider, status: str, created: datetime, **fields) -> Claim:
    n = next(_n)
    return Claim.objects.create(
        provider=provider,
        idempotency_key=f"dash-{n}",
        body_sha256=n.to_bytes(32, "big"),
        body=b"{}",
        signed_payload=b"{}",
        kid="k",
        use="claim",
        status=status,
        created_at=created,
        updated_at=fields.pop("updated_at", created),
        **fields,
    )


def event(c: Claim, at: datetime, old: str, new: str) -> ClaimEvent:
    return ClaimEvent.objects.create(claim=c, at=at, old_status=old, new_status=new)


def verified_after(provider: Provider, received: datetime, seconds: float, verdict=S.VERIFIED):
    """A claim received at ``received`` and verified ``seconds`` later (its first run)."""
    c = claim(provider, verdict, received, verification_runs=1)
    event(c, received, "", S.RECEIVED)
    event(c, received, S.RECEIVED, S.VERIFYING)
    event(c, received + timedelta(seconds=seconds), S.VERIFYING, verdict)
    return c


def check(c: Claim, run: int, name: str, outcome: str, at: datetime) -> None:
    ClaimCheck.objects.create(
        claim=c, run=run, name=name, outcome=outcome, sentence="s", checked_at=at
    )


def payout(c: Claim, amount: str, currency: str, created: datetime, settled=None) -> Payout:
    user = get_user_model().objects.get_or_create(username="dash-payer")[0]
    return Payout.objects.create(
        claim=c,
        payee=c.provider,
        amount=Decimal(amount),
        currency=currency,
        reference=f"P-{next(_n)}",
        created_at=created,
        created_by=user,
        settled_at=settled,
    )


# --- the figures -------------------------------------------------------------------------------


def test_claims_by_status_is_rebuilt_from_the_status_changes_day_by_day(provider) -> None:
    a = claim(provider, S.PAID, day(-2))  # received, verified, approved, paid over three days
    event(a, day(-2), "", S.RECEIVED)
    event(a, day(-2, 10), S.RECEIVED, S.VERIFYING)
    event(a, day(-2, 10), S.VERIFYING, S.VERIFIED)
    event(a, day(-1, 11), S.VERIFIED, S.APPROVED)
    event(a, day(0, 8), S.APPROVED, S.PAID)
    b = claim(provider, S.REJECTED, day(-1))
    event(b, day(-1), "", S.RECEIVED)
    event(b, day(-1), S.RECEIVED, S.VERIFYING)
    event(b, day(-1, 9, 1), S.VERIFYING, S.VERIFYING)  # waited for a checkpoint
    event(b, day(-1, 9, 5), S.VERIFYING, S.REJECTED)
    c = claim(provider, S.VERIFIED, day(-40))  # before the window, verified ever since
    event(c, day(-40), "", S.RECEIVED)
    event(c, day(-40), S.RECEIVED, S.VERIFYING)
    event(c, day(-40), S.VERIFYING, S.VERIFIED)
    d = claim(provider, S.RECEIVED, day(0, 12))
    event(d, day(0, 12), "", S.RECEIVED)

    data = figures.dashboard(7, now=NOW)

    h = data.history
    assert h.dates[0] == day(-6).date() and h.dates[-1] == NOW.date()

    def at_end_of(offset: int) -> dict[str, int]:
        i = h.dates.index(day(offset).date())
        return {s: values[i] for s, values in h.counts.items() if values[i]}

    assert at_end_of(0) == {S.PAID: 1, S.REJECTED: 1, S.VERIFIED: 1, S.RECEIVED: 1}
    assert at_end_of(-1) == {S.APPROVED: 1, S.REJECTED: 1, S.VERIFIED: 1}
    assert at_end_of(-2) == {S.VERIFIED: 2}
    for offset in (-3, -4, -5, -6):
        assert at_end_of(offset) == {S.VERIFIED: 1}
    counts = {s.status: s.count for s in data.statuses}
    assert counts[S.PAID] == counts[S.VERIFIED] == counts[S.RECEIVED] == counts[S.REJECTED] == 1
    assert counts[S.NEEDS_REVIEW] == 0
    assert data.awaiting_decision == 1  # verified + needs review


def test_latency_is_the_time_from_receipt_to_the_first_verdict_with_percentiles(provider):
    for seconds in (10, 60, 20):
        verified_after(provider, day(-1, 10), seconds)
    verified_after(provider, day(-2, 23, 59, 50), 30, S.NEEDS_REVIEW)  # verdict on day -1
    verified_after(provider, day(-4), 45, S.REJECTED)
    verified_after(provider, day(-30), 5)  # before a 7-day window
    # A re-verification on day -1 of a claim first verified on day -5: only the first counts.
    again = verified_after(provider, day(-5), 5)
    event(again, day(-1, 12), S.VERIFIED, S.VERIFYING)
    event(again, day(-1, 12, 1), S.VERIFYING, S.VERIFIED)
    # Still waiting: no verdict, no latency.
    waiting = claim(provider, S.VERIFYING, day(-1))
    event(waiting, day(-1), S.RECEIVED, S.VERIFYING)
    event(waiting, day(-1, 9, 0, 5), S.VERIFYING, S.VERIFYING)

    rows = {d.day: d for d in figures.verification_latency(figures.window(7, NOW))}

    assert set(rows) == {day(-1).date(), day(-4).date(), day(-5).date()}
    d1 = rows[day(-1).date()]
    assert d1.count == 4  # 10, 20, 30, 60 s
    assert d1.p50_s == pytest.approx(25)  # between 20 and 30
    assert d1.p95_s == pytest.approx(30 + (60 - 30) * 0.85)  # rank 0.95 * 3 = 2.85
    assert (rows[day(-4).date()].count, rows[day(-4).date()].p95_s) == (1, pytest.approx(45))
    assert rows[day(-5).date()].p50_s == pytest.approx(5)


def test_percentile_cont_interpolates_like_postgresql() -> None:
    assert figures.percentile_cont([7], 0.95) == 7
    assert figures.percentile_cont([1, 2, 3, 4], 0.5) == 2.5
    assert figures.percentile_cont([10, 0], 0.95) == pytest.approx(9.5)
    with pytest.raises(ValueError):
        figures.percentile_cont([], 0.5)


def test_reject_reasons_count_failed_checks_of_the_latest_run_once_per_claim(provider):
    twice = claim(provider, S.REJECTED, day(-3), verification_runs=2, updated_at=day(-1))
    check(twice, 1, "signature", "fail", day(-3))  # an earlier run: not counted
    check(twice, 2, "signature", "pass", day(-1))
    check(twice, 2, "procedure:urn:uuid:a", "fail", day(-1))
    check(twice, 2, "procedure:urn:uuid:b", "fail", day(-1))  # one claim, one "procedure"
    check(twice, 2, "binding", "fail", day(-1))
    once = claim(provider, S.REJECTED, day(-2), verification_runs=1)
    check(once, 1, "procedure:urn:uuid:c", "fail", day(-2))
    check(once, 1, "business", "warn", day(-2))
    old = claim(provider, S.REJECTED, day(-20), verification_runs=1)  # before a 7-day window
    check(old, 1, "signature", "fail", day(-20))
    replaced = claim(provider, S.SUPERSEDED, day(-2), verification_runs=1)  # not rejected now
    check(replaced, 1, "fhir", "fail", day(-2))

    got = figures.reject_reasons(figures.window(7, NOW))

    assert got.claims == 2
    assert [(r.check, r.claims) for r in got.reasons] == [("procedure", 2), ("binding", 1)]
    assert got.reasons[0].label.startswith("Procedure on the ledger")
    month = figures.reject_reasons(figures.window(30, NOW))
    assert month.claims == 3
    assert ("signature", 1) in [(r.check, r.claims) for r in month.reasons]


def test_payouts_per_day_per_currency_and_what_is_approved_but_not_paid(provider):
    def approved(amount: str, currency: str, created: datetime, settled=None) -> Payout:
        return payout(claim(provider, S.APPROVED, created), amount, currency, created, settled)

    approved("100.50", "EUR", day(-1, 9))
    approved("20.25", "EUR", day(-1, 23, 59, 59))
    approved("5.00", "EUR", day(0, 1), settled=day(0, 2))
    approved("1000.00", "USD", day(-2))
    approved("7.00", "EUR", day(-9))  # before a 7-day window, still unpaid

    per_currency = {p.currency: p for p in figures.payouts_per_day(figures.window(7, NOW))}

    assert list(per_currency) == ["EUR", "USD"]
    eur = {d.day: (d.count, d.amount) for d in per_currency["EUR"].days}
    assert len(eur) == 7
    assert eur[day(-1).date()] == (2, Decimal("120.75"))
    assert eur[day(0).date()] == (1, Decimal("5.00"))
    assert eur[day(-2).date()] == (0, Decimal("0.00"))
    assert (per_currency["EUR"].count, per_currency["EUR"].amount) == (3, Decimal("125.75"))
    assert per_currency["USD"].amount == Decimal("1000.00")
    unpaid = {m.currency: (m.count, m.amount) for m in figures.unpaid_payouts()}
    assert unpaid == {"EUR": (3, Decimal("127.75")), "USD": (1, Decimal("1000.00"))}

    # a payout a batch job voided (its claim went back to review) is owed to nobody
    void = approved("300.00", "USD", day(-1))
    Payout.objects.filter(pk=void.pk).update(voided_at=day(0), void_reason="key revoked")
    unpaid = {m.currency: (m.count, m.amount) for m in figures.unpaid_payouts()}
    assert unpaid["USD"] == (1, Decimal("1000.00"))


def test_a_period_is_7_30_or_90_days() -> None:
    assert figures.parse_period(None) == 30
    assert figures.parse_period("90") == 90
    for bad in ("31", "abc", "-7", "9" * 40):
        with pytest.raises(figures.PeriodError, match="7, 30, 90"):
            figures.parse_period(bad)


# --- the charts ----------------------------------------------------------------------------------


def test_charts_are_labelled_escape_their_text_and_say_when_empty() -> None:
    dates = [day(-1).date(), day(0).date()]
    svg = charts.stacked_bars_svg(
        chart_id="c",
        title="A <b>title</b>",
        desc="what & why",
        dates=dates,
        series=[charts.Series("x", "<script>", [1, 3], "#000")],
        y_label="claims",
    )
    assert 'role="img"' in svg and 'aria-labelledby="c-title" aria-describedby="c-desc"' in svg
    assert '<title id="c-title">A &lt;b&gt;title&lt;/b&gt;</title>' in svg
    assert '<desc id="c-desc">what &amp; why</desc>' in svg
    assert "<script>" not in svg and svg.count('class="bar"') == 2
    assert "Mar 10: 3 &lt;script&gt;" in svg
    empty = charts.hbars_svg(chart_id="r", title="t", desc="d", rows=[], empty="None rejected")
    assert "None rejected" in empty and "<title" in empty
    line = charts.lines_svg(
        chart_id="l",
        title="t",
        desc="d",
        dates=[*dates, day(1).date()],
        series=[charts.Series("p50", "median", [90, None, 30], "#000")],
        y_label="s",
        fmt=charts.fmt_duration,
    )
    assert line.count('class="dot"') == 2 and "<polyline" not in line  # a gap breaks it
    assert "Mar 9: median 90 s" in line and charts.fmt_duration(5400) == "90 min"


# --- the page ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADJUSTER, Role.SENIOR_ADJUSTER, Role.AUDITOR, Role.OPERATOR])
def test_workspace_roles_see_the_dashboard(client, role) -> None:
    client.force_login(user_with(role))
    response = client.get("/")
    assert response.status_code == 200
    assert response.templates[0].name == "review/dashboard.html"


def test_provider_users_are_refused_and_anonymous_users_go_to_the_login_page(client) -> None:
    response = client.get("/?days=7")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/%3Fdays%3D7"
    client.force_login(user_with())  # an API user: no workspace role
    assert client.get("/").status_code == 403


def test_logging_in_lands_on_the_dashboard(client) -> None:
    user = user_with(Role.ADJUSTER)
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"


def _page_data(provider, now: datetime) -> None:
    base = now
    verified_after(provider, day(-1, 8, base=base), 42)
    review = verified_after(provider, day(-1, 9, base=base), 90, S.NEEDS_REVIEW)
    rejected = verified_after(provider, day(-2, base=base), 12, S.REJECTED)
    check(rejected, 1, "double_billing", "fail", day(-2, base=base))
    paid = claim(provider, S.APPROVED, day(-3, base=base))
    payout(paid, "1234.56", "EUR", day(-1, base=base))
    assert review.status == S.NEEDS_REVIEW


def test_the_page_shows_counters_linking_to_the_queue_and_the_numbers(client, provider):
    _page_data(provider, datetime.now(UTC))
    client.force_login(user_with(Role.ADJUSTER))
    html = client.get("/").content.decode()

    assert 'href="/queue/?status=needs_review"' in html
    assert re.search(r'data-testid="awaiting-decision">\s*<span class="n">2</span>', html)
    assert "1234.56 EUR" in html  # approved, not paid
    for title in (
        "Open claims by status at the end of each day, last 30 days",
        "Verification latency per day (median and 95th percentile), last 30 days",
        "Reject reasons, last 30 days",
        "Payouts per day in EUR, last 30 days",
    ):
        assert f">{title}</title>" in html
    assert "Double billing" in html
    assert ">66 s<" in html  # the median of 42 s and 90 s, in the latency table


def test_operators_see_counts_without_queue_links(client, provider) -> None:
    client.force_login(user_with(Role.OPERATOR))
    html = client.get("/").content.decode()
    assert "/queue/?status=" not in html


def test_an_empty_system_reads_well(client) -> None:
    client.force_login(user_with(Role.AUDITOR))
    html = client.get("/").content.decode()
    assert "No payouts yet" in html
    assert "No open claims in this period" in html
    assert "No claims verified in this period" in html
    assert "No claims rejected in this period" in html
    assert "(no unsettled payout)" in html


def test_htmx_gets_only_the_charts_of_the_period(client, provider) -> None:
    _page_data(provider, datetime.now(UTC))
    client.force_login(user_with(Role.ADJUSTER))
    response = client.get(
        "/?days=7", headers={"HX-Request": "true", "HX-Target": "dashboard-charts"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'data-days="7"' in html
    assert "Reject reasons, last 7 days" in html
    assert "HX-Request" in response["Vary"]


def test_the_status_chart_shows_open_claims_unless_asked_for_all(client, provider) -> None:
    now = datetime.now(UTC)
    paid = claim(provider, S.PAID, day(-2, base=now))
    event(paid, day(-2, base=now), "", S.RECEIVED)
    event(paid, day(-2, 10, base=now), S.RECEIVED, S.VERIFYING)
    event(paid, day(-2, 10, base=now), S.VERIFYING, S.VERIFIED)
    event(paid, day(-1, base=now), S.VERIFIED, S.APPROVED)
    event(paid, day(0, 0, base=now), S.APPROVED, S.PAID)
    client.force_login(user_with(Role.ADJUSTER))

    def series(html: str) -> set[str]:
        chart = html.split('data-chart="chart-status"')[1].split("</svg>")[0]
        return set(re.findall(r'data-series="(\w+)"', chart))

    assert series(client.get("/").content.decode()) == {S.VERIFIED, S.APPROVED}
    html = client.get("/?statuses=all&days=7").content.decode()
    assert series(html) == {S.VERIFIED, S.APPROVED, S.PAID}
    assert ">Claims by status at the end of each day, last 7 days</title>" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [("days=365", "The period must be 7, 30, 90 days"), ("statuses=x", "Show open or all")],
)
def test_a_bad_choice_says_so(client, query, message) -> None:
    client.force_login(user_with(Role.ADJUSTER))
    response = client.get(f"/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_page_costs_the_same_handful_of_queries_whatever_the_data(
    client, provider, django_assert_max_num_queries
) -> None:
    client.force_login(user_with(Role.ADJUSTER))
    now = datetime.now(UTC)
    _page_data(provider, now)
    with django_assert_max_num_queries(10):
        assert client.get("/?days=90").status_code == 200
    for i in range(40):  # ten times the claims, spread over the days and currencies
        c = verified_after(provider, day(-(i % 80), base=now), i + 1, S.APPROVED)
        payout(c, f"{i}.10", ("EUR", "USD", "GBP")[i % 3], c.created_at)
        r = verified_after(provider, day(-(i % 60), base=now), i, S.REJECTED)
        check(r, 1, ("signature", "binding", f"procedure:{i}")[i % 3], "fail", r.created_at)
    with django_assert_max_num_queries(10):
        html = client.get("/?days=90").content.decode()
    assert "Payouts per day in GBP" in html
