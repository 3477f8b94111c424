"""What the dashboard shows, aggregated in the database: a handful of queries, each bounded by
the date window, whatever the number of claims. docs/dashboard.md says how each figure is
computed.

Days are UTC calendar days. A window of ``days`` days ends today (inclusive) and starts at
midnight UTC ``days - 1`` days before.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import TruncDate
from django.utils import timezone

from claims.checks import billing, binding, business, fhir, signature
from claims.checks import ledger as ledger_check
from claims.models import Claim, ClaimCheck, ClaimEvent
from claims.states import FINAL, ClaimStatus
from review.models import Payout

S = ClaimStatus
PERIODS = (7, 30, 90)  # the choices the page offers, in days
DEFAULT_PERIOD = 30
AWAITING_DECISION = (S.VERIFIED, S.NEEDS_REVIEW)  # what the queue asks adjusters to decide
VERDICTS = (S.VERIFIED, S.NEEDS_REVIEW, S.REJECTED)
# Stacking order of the status chart: work in progress at the bottom (nearest the axis, easiest
# to read), outcomes above it.
STATUS_ORDER: tuple[str, ...] = (
    S.RECEIVED,
    S.VERIFYING,
    S.NEEDS_REVIEW,
    S.VERIFIED,
    S.INFO_REQUESTED,
    S.APPROVED,
    S.PAID,
    S.DENIED,
    S.REJECTED,
    S.SUPERSEDED,
    S.VOIDED,
)
OPEN_STATUSES: tuple[str, ...] = tuple(
    s for s in STATUS_ORDER if s not in FINAL and s != S.REJECTED
)

# Check names as people read them (docs/verification.md lists the checks). Every
# ``procedure:<fullUrl>`` check counts as one reason, "procedure".
PROCEDURE = "procedure"
CHECK_LABELS: dict[str, str] = {
    signature.NAME: "Signature (provider key, JWS)",
    fhir.NAME: "FHIR validity",
    PROCEDURE: "Procedure on the ledger (commitment, inclusion, checkpoint)",
    binding.NAME: "Binding (provider, items, dates)",
    billing.RELATED: "Corrected or voided claim",
    billing.DOUBLE_BILLING: "Double billing",
    business.NAME: "Business rules",
}


class PeriodError(ValueError):
    """A period or scope the dashboard does not offer; the message is for people."""


def parse_period(raw: str | None) -> int:
    """The period in days from a query parameter; missing means the default."""
    if raw in (None, ""):
        return DEFAULT_PERIOD
    try:
        days = int(raw)
    except ValueError:
        days = -1
    if days not in PERIODS:
        choices = ", ".join(str(p) for p in PERIODS)
        raise PeriodError(f"The period must be {choices} days, not {raw[:20]!r}.")
    return days


SCOPES = ("open", "all")  # the status chart: claims still in progress, or every claim


def parse_scope(raw: str | None) -> str:
    """Which claims the status chart stacks; missing means the open ones."""
    if raw in (None, ""):
        return "open"
    if raw not in SCOPES:
        raise PeriodError(f"Show open or all claims, not {raw[:20]!r}.")
    return raw


@dataclass(frozen=True)
class Window:
    """``days`` UTC days ending with ``today``."""

    days: int
    today: date

    @property
    def first(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def dates(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(self.days)]


def window(days: int, now: datetime | None = None) -> Window:
    now = (now or timezone.now()).astimezone(UTC)
    return Window(days=days, today=now.date())


_CENT = Decimal("0.01")


def _money(value: Decimal | None) -> Decimal:
    """A sum of amounts to the cent: SQLite adds decimals as floats (exact enough for any
    realistic total, then rounded back to cents); PostgreSQL adds them exactly."""
    return (value or Decimal(0)).quantize(_CENT)


def _day(value: date | datetime) -> date:
    # TruncDate gives a date; some backends hand back a datetime.
    return value.date() if isinstance(value, datetime) else value


# --- counters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int


def status_counts() -> dict[str, int]:
    """How many claims are in each status now (every status, zeros included). One query."""
    found = dict(Claim.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {s: found.get(s, 0) for s in STATUS_ORDER}


@dataclass(frozen=True)
class MoneyTotal:
    currency: str
    amount: Decimal
    count: int


def unpaid_payouts() -> list[MoneyTotal]:
    """Approved, not yet paid: the payouts no payment run has settled, per currency (a voided
    payout is owed to nobody)."""
    rows = (
        Payout.objects.filter(settled_at__isnull=True, voided_at__isnull=True)
        .order_by()
        .values("currency")
        .annotate(n=Count("id"), amount=Sum("amount"))
        .order_by("currency")
    )
    return [MoneyTotal(r["currency"], _money(r["amount"]), r["n"]) for r in rows]


# --- claims by status over time ------------------------------------------------------------------


@dataclass(frozen=True)
class StatusHistory:
    """``counts[status][i]``: claims in ``status`` at the end of ``dates[i]`` (UTC)."""

    dates: list[date]
    counts: dict[str, list[int]]

    def total(self, i: int) -> int:
        return sum(values[i] for values in self.counts.values())


def status_history(win: Window, now_counts: dict[str, int]) -> StatusHistory:
    """Claims in each status at the end of each day of ``win``.

    Walks back from the counts now: the end of day d-1 is the end of day d minus what entered a
    status on day d plus what left it. Entries and exits come from ``ClaimEvent`` (every status
    change writes one), counted per day and transition in one query bounded by the window.
    """
    rows = (
        ClaimEvent.objects.filter(at__gte=win.since)
        .annotate(day=TruncDate("at", tzinfo=UTC))
        .order_by()
        .values_list("day", "old_status", "new_status")
        .annotate(n=Count("id"))
    )
    net: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, old, new, n in rows:
        moves = net[_day(day)]
        moves[new] += n
        if old:
            moves[old] -= n
    stock = dict(now_counts)
    # Anything stamped after today (a clock ahead of ours) is undone first.
    for day in sorted(d for d in net if d > win.today):
        for status, delta in net[day].items():
            stock[status] = stock.get(status, 0) - delta
    dates = win.dates
    counts = {s: [0] * len(dates) for s in STATUS_ORDER}
    for i in range(len(dates) - 1, -1, -1):
        for s in STATUS_ORDER:
            counts[s][i] = stock.get(s, 0)
        for status, delta in net.get(dates[i], {}).items():
            stock[status] = stock.get(status, 0) - delta
    return StatusHistory(dates=dates, counts=counts)


# --- verification latency ------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate ``percentile_cont(f) WITHIN GROUP (ORDER BY x)``."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is a fraction between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """What ``percentile_cont`` computes: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = fraction * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyDay:
    """First verdicts reached on ``day``: how many, and the median and 95th percentile of the
    time from receipt to the verdict, in seconds."""

    day: date
    count: int
    p50_s: float
    p95_s: float


def _first_verdicts(win: Window):
    verdict = Q(old_status=S.VERIFYING, new_status__in=VERDICTS)
    earlier = ClaimEvent.objects.filter(verdict, claim_id=OuterRef("claim_id")).filter(
        Q(at__lt=OuterRef("at")) | Q(at=OuterRef("at"), id__lt=OuterRef("id"))
    )
    return (
        ClaimEvent.objects.filter(verdict, at__gte=win.since)
        .exclude(Exists(earlier))
        .annotate(
            day=TruncDate("at", tzinfo=UTC),
            latency=ExpressionWrapper(
                F("at") - F("claim__created_at"), output_field=DurationField()
            ),
        )
        .order_by()
    )


def verification_latency(win: Window) -> list[LatencyDay]:
    """Per day, the time from a claim's receipt (``Claim.created_at``, the moment its
    ``received`` event is written) to its first verdict (the first ``verifying -> verified |
    needs_review | rejected`` event). Re-verification runs are not counted: they start long
    after receipt. PostgreSQL computes the percentiles; elsewhere one row per verdict in the
    window comes back and Python computes the same interpolation."""
    qs = _first_verdicts(win)
    if connection.vendor == "postgresql":
        rows = (
            qs.values("day")
            .annotate(
                n=Count("id"),
                p50=PercentileCont("latency", 0.5, output_field=DurationField()),
                p95=PercentileCont("latency", 0.95, output_field=DurationField()),
            )
            .order_by("day")
        )
        return [
            LatencyDay(_day(r["day"]), r["n"], r["p50"].total_seconds(), r["p95"].total_seconds())
            for r in rows
        ]
    by_day: dict[date, list[float]] = defaultdict(list)
    for day, latency in qs.values_list("day", "latency"):
        by_day[_day(day)].append(latency.total_seconds())
    return [
        LatencyDay(day, len(v), percentile_cont(v, 0.5), percentile_cont(v, 0.95))
        for day, v in sorted(by_day.items())
    ]


# --- reject reasons ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectReason:
    check: str
    label: str
    claims: int


@dataclass(frozen=True)
class RejectReasons:
    claims: int  # rejected claims in the window; one may fail several checks
    reasons: list[RejectReason]


def reject_reasons(win: Window) -> RejectReasons:
    """The checks that failed in the latest run of the claims now ``rejected`` whose rejection
    (``Claim.updated_at``: a rejected claim only moves by a transition) falls in the window,
    most frequent first, each counted once per claim. Two queries."""
    rejected = Q(claim__status=S.REJECTED, claim__updated_at__gte=win.since)
    rows = (
        ClaimCheck.objects.filter(
            rejected, outcome=ClaimCheck.Outcome.FAIL, run=F("claim__verification_runs")
        )
        .annotate(
            check=Case(
                When(name__startswith=ledger_check.PREFIX, then=Value(PROCEDURE)),
                default=F("name"),
                output_field=CharField(),
            )
        )
        .order_by()
        .values("check")
        .annotate(n=Count("claim_id", distinct=True))
        .order_by("-n", "check")
    )
    reasons = [
        RejectReason(r["check"], CHECK_LABELS.get(r["check"], r["check"]), r["n"]) for r in rows
    ]
    total = Claim.objects.filter(status=S.REJECTED, updated_at__gte=win.since).count()
    return RejectReasons(claims=total, reasons=reasons)


# --- payouts per day -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PayoutDay:
    day: date
    count: int
    amount: Decimal


@dataclass(frozen=True)
class CurrencyPayouts:
    """One currency's payouts per day of the window (every day, zeros included)."""

    currency: str
    days: list[PayoutDay]

    @property
    def count(self) -> int:
        return sum(d.count for d in self.days)

    @property
    def amount(self) -> Decimal:
        return sum((d.amount for d in self.days), Decimal("0.00"))


def payouts_per_day(win: Window) -> list[CurrencyPayouts]:
    """Payouts created (an approval committed the money) per UTC day and currency: count and
    amount. One query."""
    rows = (
        Payout.objects.filter(created_at__gte=win.since)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .order_by()
        .values("currency", "day")
        .annotate(n=Count("id"), amount=Sum("amount"))
    )
    found: dict[str, dict[date, tuple[int, Decimal]]] = defaultdict(dict)
    for r in rows:
        found[r["currency"]][_day(r["day"])] = (r["n"], _money(r["amount"]))
    zero = (0, Decimal("0.00"))
    return [
        CurrencyPayouts(currency, [PayoutDay(d, *found[currency].get(d, zero)) for d in win.dates])
        for currency in sorted(found)
    ]


# --- everything the page shows -------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    window: Window
    statuses: list[StatusCount]
    awaiting_decision: int
    unpaid: list[MoneyTotal]
    history: StatusHistory
    latency: list[LatencyDay]
    rejects: RejectReasons
    payouts: list[CurrencyPayouts] = field(default_factory=list)


def dashboard(days: int = DEFAULT_PERIOD, *, now: datetime | None = None) -> Dashboard:
    """Every figure of the dashboard for the ``days`` days ending today: seven queries."""
    win = window(days, now)
    counts = status_counts()
    return Dashboard(
        window=win,
        statuses=[StatusCount(s, S(s).label, counts[s]) for s in STATUS_ORDER],
        awaiting_decision=sum(counts[s] for s in AWAITING_DECISION),
        unpaid=unpaid_payouts(),
        history=status_history(win, counts),
        latency=verification_latency(win),
        rejects=reject_reasons(win),
        payouts=payouts_per_day(win),
    )
