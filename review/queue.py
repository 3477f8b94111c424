"""The adjusters' work queue: which claims match the filters, in which order, one page at a time.

Pages are keyset pages (``after`` / ``before`` name the boundary claim's id; its sort key is read
back), so page 20,000 costs what page 1 costs: every filter and sort walks an index of
``Claim.Meta.indexes`` from the boundary. A sort key that can be NULL (``total``) is walked in two
segments (values, then NULLs) so that each segment stays an ordered index range.

Every query parameter is validated here: a bad one is dropped with a sentence saying why, never a
500. Counts per status are capped (``COUNT_CAP``) and bounded by a statement timeout, so they
stay cheap on a million claims.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Value

from claims.checks.ledger import PREFIX as PROCEDURE_PREFIX
from claims.models import Claim, ClaimCheck, Provider
from claims.states import ClaimStatus

S = ClaimStatus
PAGE_SIZE = 50
COUNT_CAP = 1_000
COUNT_TIMEOUT_MS = 250
MAX_ID = 2**63 - 1
MAX_AMOUNT = Decimal("999999999999.99")  # Claim.total has 14 digits, 2 of them decimals
MAX_SEARCH = 100
LIVE_MAX_IDS = 200
FEW_FAILURES = 5_000  # below this many failures of a check, the queue starts from them
COUNT_FAILURES = 50_000  # ... and its counts (no LIMIT to meet early: a pass over them all)
# Statuses a claim leaves by itself (the verification worker moves it): the page polls them.
TRANSITIONAL = frozenset({S.RECEIVED, S.VERIFYING})

SORTS: dict[str, tuple[str, bool, str]] = {  # name -> (field, descending, label)
    "newest": ("created_at", True, "newest first"),
    "oldest": ("created_at", False, "oldest first"),
    "amount_desc": ("total", True, "highest amount first"),
    "amount_asc": ("total", False, "lowest amount first"),
}
NULLABLE_KEYS = frozenset({"total"})
VERDICTS = {
    S.VERIFIED.value: "verified",
    S.NEEDS_REVIEW.value: "needs review",
    S.REJECTED.value: "rejected",
    "none": "none yet",
}
# Check names as claims.verification records them; "procedure" covers every procedure:<url>.
FAILED_CHECKS = {
    "signature": "signature",
    "fhir": "FHIR validity",
    "procedure": "a procedure's ledger proof",
    "binding": "binding",
    "related": "related claim",
    "double_billing": "double billing",
}
_HEX_PREFIX = re.compile(r"[0-9a-fA-F-]{4,36}")


@dataclass(frozen=True)
class QueueQuery:
    """What the adjuster asked for, validated. The defaults are the unfiltered queue."""

    status: str = ""
    provider: int | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    created_from: date | None = None
    created_to: date | None = None
    verdict: str = ""
    failed_check: str = ""
    q: str = ""
    sort: str = "newest"
    after: int | None = None
    before: int | None = None

    @property
    def filtered(self) -> bool:
        skip = {"sort", "after", "before", "status"}
        return any(
            getattr(self, f.name) not in (None, "") for f in fields(self) if f.name not in skip
        )

    def params(self, **changes: object) -> dict[str, str]:
        """The query string's parameters (empty and default ones left out), with ``changes``."""
        query = replace(self, **changes)
        out = {}
        for f in fields(query):
            value = getattr(query, f.name)
            if value in (None, "") or (f.name == "sort" and value == "newest"):
                continue
            out[f.name] = value.isoformat() if isinstance(value, date) else str(value)
        return out

    def url(self, path: str, **changes: object) -> str:
        params = self.params(**changes)
        return f"{path}?{urlencode(params)}" if params else path


BADGES = {
    S.VERIFIED: "ok",
    S.APPROVED: "ok",
    S.PAID: "ok",
    S.REJECTED: "bad",
    S.DENIED: "bad",
    S.SUPERSEDED: "muted",
    S.VOIDED: "muted",
}


@dataclass
class QueueRow:
    """One line of the table, its cells computed once (the template only prints them)."""

    claim: Claim
    failed_checks: list[str] = field(default_factory=list)
    url: str = ""  # the claim's page, set by the view
    selectable: bool = False  # the user may bulk approve it (set by the view)
    four_eyes: bool = False  # above the four-eyes amount (set by the view)

    def __post_init__(self) -> None:
        c = self.claim
        self.pk = c.pk
        self.public_id = str(c.public_id)
        self.short_id = c.public_id.hex[:8]
        self.reference = c.provider_reference or "—"
        self.provider = c.provider.name
        self.total_text = f"{c.total} {c.currency}" if c.total is not None else "—"
        self.status = c.status
        self.status_label = c.get_status_display()
        self.badge = BADGES.get(c.status, "warn")
        self.verdict_label = VERDICTS.get(c.verdict, c.verdict) or "—"
        created = c.created_at.astimezone(UTC)
        self.created_iso = created.isoformat()
        self.created_text = created.strftime("%Y-%m-%d %H:%M")
        hold = getattr(c, "hold", None)
        self.holder = hold.user.get_username() if hold else ""
        self.transitional = c.status in TRANSITIONAL


@dataclass
class QueuePage:
    rows: list[QueueRow]
    next_after: int | None  # the cursor of the next page, None on the last one
    prev_before: int | None  # the cursor of the previous page, None on the first one

    @property
    def live_ids(self) -> list[int]:
        return [r.claim.pk for r in self.rows if r.transitional]


# --- parsing --------------------------------------------------------------------------------


def _one(params, name: str) -> str:
    """The parameter's last value, stripped, without NUL (PostgreSQL refuses it in text)."""
    return (params.get(name) or "").replace("\x00", "").strip()


def _int(text: str, what: str, errors: list[str]) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        errors.append(f"{what} must be a positive whole number, not {text[:40]!r}.")
        return None
    return int(text)


def _amount(text: str, what: str, errors: list[str]) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or not text.isascii():
        errors.append(f"The {what} amount {text[:40]!r} is not a number (write e.g. 250 or 99.50).")
        return None
    if value < 0 or value > MAX_AMOUNT:
        errors.append(f"The {what} amount must be between 0 and {MAX_AMOUNT:,}.")
        return None
    if value.as_tuple().exponent < -2:
        errors.append(f"The {what} amount has at most two decimals, not {text[:40]!r}.")
        return None
    return value


def _date(text: str, what: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        value = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        value = None
    if value is None:
        errors.append(f"The {what} date {text[:40]!r} is not a date: write it as YYYY-MM-DD.")
        return None
    if not 1900 <= value.year <= 9998:
        errors.append(f"The {what} date must be between 1900 and 9998.")
        return None
    return value


def _choice(text: str, choices, what: str, errors: list[str]) -> str:
    if text and text not in choices:
        errors.append(f"{what} {text[:40]!r} is not one of: {', '.join(choices)}.")
        return ""
    return text


def queue_query_parse(params) -> tuple[QueueQuery, list[str]]:
    """The query from a request's GET parameters, and a sentence for each one that was dropped."""
    errors: list[str] = []
    statuses = [s.value for s in S]
    q = _one(params, "q")
    if len(q) > MAX_SEARCH:
        errors.append(f"The search is limited to {MAX_SEARCH} characters.")
        q = q[:MAX_SEARCH]
    query = QueueQuery(
        status=_choice(_one(params, "status"), statuses, "Status", errors),
        provider=_int(_one(params, "provider"), "The provider", errors),
        amount_min=_amount(_one(params, "amount_min"), "minimum", errors),
        amount_max=_amount(_one(params, "amount_max"), "maximum", errors),
        created_from=_date(_one(params, "created_from"), "start", errors),
        created_to=_date(_one(params, "created_to"), "end", errors),
        verdict=_choice(_one(params, "verdict"), list(VERDICTS), "Verdict", errors),
        failed_check=_choice(
            _one(params, "failed_check"), list(FAILED_CHECKS), "Failed check", errors
        ),
        q=q,
        sort=_choice(_one(params, "sort"), list(SORTS), "Sort", errors) or "newest",
        after=_int(_one(params, "after"), "The page cursor", errors),
        before=_int(_one(params, "before"), "The page cursor", errors),
    )
    if query.provider is not None and not Provider.objects.filter(pk=query.provider).exists():
        errors.append(f"There is no provider {query.provider}.")
        query = replace(query, provider=None)
    low, high = query.amount_min, query.amount_max
    if low is not None and high is not None and low > high:
        errors.append("The minimum amount is above the maximum: both are ignored.")
        query = replace(query, amount_min=None, amount_max=None)
    if query.created_from and query.created_to and query.created_from > query.created_to:
        errors.append("The start date is after the end date: both are ignored.")
        query = replace(query, created_from=None, created_to=None)
    if query.after and query.before:
        query = replace(query, before=None)
    return query, errors


# --- the query ------------------------------------------------------------------------------


def _search(q: str) -> Q:
    """A claim id (whole, or the first hex digits shown in the queue) or the start of the
    provider's own reference. A hex prefix is a range of UUIDs: the unique index answers it."""
    found = Q(provider_reference__startswith=q)
    if _HEX_PREFIX.fullmatch(q):
        digits = q.replace("-", "").lower()
        if 4 <= len(digits) <= 32 and all(c in "0123456789abcdef" for c in digits):
            low = uuid.UUID(digits.ljust(32, "0"))
            high = uuid.UUID(digits.ljust(32, "f"))
            found |= Q(public_id__gte=low, public_id__lte=high)
    return found


def failed_check_exists(name: str) -> Exists:
    """A check named ``name`` failed in the claim's latest verification run."""
    checks = ClaimCheck.objects.filter(
        claim_id=OuterRef("pk"), run=OuterRef("verification_runs"), outcome=ClaimCheck.Outcome.FAIL
    )
    if name == "procedure":
        checks = checks.filter(name__startswith=PROCEDURE_PREFIX)
    else:
        checks = checks.filter(name=name)
    return Exists(checks)


def failures_are_few(name: str, below: int = FEW_FAILURES) -> bool:
    """Fewer than ``FEW_FAILURES`` recorded failures of this check (any run): an index-only
    count on the partial index of failures. Then the queue starts from the failures and sorts
    them, instead of walking claims in order and probing each one (which, for a rare failure,
    would probe most of the table before finding a page)."""
    checks = ClaimCheck.objects.filter(outcome=ClaimCheck.Outcome.FAIL)
    if name == "procedure":
        checks = checks.filter(name__startswith=PROCEDURE_PREFIX)
    else:
        checks = checks.filter(name=name)
    return checks.order_by().values("claim_id")[:below].count() < below


def queue_filtered(query: QueueQuery, *, with_status: bool = True) -> QuerySet[Claim]:
    """The claims matching every filter of ``query`` (its status too unless ``with_status`` is
    false), unordered."""
    qs = Claim.objects.all()
    if with_status and query.status:
        qs = qs.filter(status=query.status)
    if query.provider is not None:
        qs = qs.filter(provider_id=query.provider)
    if query.amount_min is not None:
        qs = qs.filter(total__gte=query.amount_min)
    if query.amount_max is not None:
        qs = qs.filter(total__lte=query.amount_max)
    if query.created_from:
        qs = qs.filter(created_at__gte=datetime.combine(query.created_from, time.min, UTC))
    if query.created_to:
        end = query.created_to + timedelta(days=1)
        qs = qs.filter(created_at__lt=datetime.combine(end, time.min, UTC))
    if query.verdict:
        qs = qs.filter(verdict="" if query.verdict == "none" else query.verdict)
    if query.failed_check:
        qs = qs.filter(failed_check_exists(query.failed_check))
    if query.q:
        qs = qs.filter(_search(query.q))
    return qs


ROW_FIELDS = (
    "id",
    "public_id",
    "provider_reference",
    "provider__name",
    "total",
    "currency",
    "status",
    "verdict",
    "verification_runs",
    "created_at",
    "hold__since",
    "hold__user__username",
)


def _rows_of(qs: QuerySet[Claim]) -> QuerySet[Claim]:
    """Only what a row shows: the Bundle bytes stay in the database."""
    return qs.select_related("provider", "hold__user").only(*ROW_FIELDS)


class StaleCursor(Exception):
    """The page cursor names no claim."""


def _walk(
    qs: QuerySet[Claim],
    key: str,
    descending: bool,
    boundary: dict | None,
    limit: int,
    *,
    back: bool = False,
    sort_matches: bool = False,
) -> list[Claim]:
    """Up to ``limit`` claims of ``qs`` strictly after ``boundary`` (a dict of ``key`` and
    ``id``; None: from the start) in the queue's (``key``, id) order with NULL keys last; with
    ``back``, the claims just before it, nearest first.

    Each segment (non-NULL keys, then NULL keys) is one ordered index range: (key <= v AND
    (key < v OR id < b)) lets PostgreSQL start its index scan at the boundary. With
    ``sort_matches`` the order is on expressions no index provides: PostgreSQL then finds the
    (few) matches first and sorts them (see :func:`failures_are_few`)."""
    segments = ["value", "null"] if key in NULLABLE_KEYS else ["value"]
    if back:
        segments.reverse()
        descending = not descending
    at = None if boundary is None else ("null" if boundary[key] is None else "value")
    out: list[Claim] = []
    started = boundary is None
    lt, lte = ("lt", "lte") if descending else ("gt", "gte")
    first, second = F(key), F("id")
    if sort_matches:
        first = first + (timedelta(0) if key == "created_at" else Value(Decimal(0)))
        second = second + Value(0)
    order = [first.desc(), second.desc()] if descending else [first.asc(), second.asc()]
    for segment in segments:
        if not started and segment != at:
            continue
        part = qs
        if key in NULLABLE_KEYS:
            part = part.filter(**{f"{key}__isnull": segment == "null"})
        if not started:
            bid = boundary["id"]
            if segment == "null":
                part = part.filter(**{f"id__{lt}": bid})
            else:
                v = boundary[key]
                part = part.filter(**{f"{key}__{lte}": v})
                part = part.filter(Q(**{f"{key}__{lt}": v}) | Q(**{f"id__{lt}": bid}))
            started = True
        out += list(_rows_of(part).order_by(*order)[: limit - len(out)])
        if len(out) >= limit:
            break
    return out


def _boundary(claim_id: int, key: str) -> dict:
    found = Claim.objects.filter(pk=claim_id).values("id", key).first()
    if found is None:
        raise StaleCursor(f"no claim {claim_id}")
    return found


def failed_checks_of(claims: list[Claim]) -> dict[int, list[str]]:
    """Names of the checks that failed in each claim's latest run (one query for the page)."""
    runs = {c.pk: c.verification_runs for c in claims}
    out: dict[int, list[str]] = {pk: [] for pk in runs}
    found = ClaimCheck.objects.filter(
        claim_id__in=list(runs), outcome=ClaimCheck.Outcome.FAIL
    ).values_list("claim_id", "run", "name")
    for claim_id, run, name in found.order_by("claim_id", "id"):
        if run == runs[claim_id]:
            short = "procedure" if name.startswith(PROCEDURE_PREFIX) else name
            if short not in out[claim_id]:
                out[claim_id].append(short)
    return out


def queue_rows(claims: list[Claim]) -> list[QueueRow]:
    failed = failed_checks_of(claims)
    return [QueueRow(c, failed[c.pk]) for c in claims]


@contextmanager
def interactive(**settings: str) -> Iterator[None]:
    """PostgreSQL settings for the enclosed queries only: no parallel workers (starting them
    costs more than a page's index walk, and far more on a busy machine), plus ``settings``.
    Transaction-local, restored on the way out (rolled back with the savepoint on error)."""
    if connection.vendor != "postgresql":
        yield
        return
    wanted = {"max_parallel_workers_per_gather": "0", **settings}
    names = list(wanted)
    pairs = ", ".join("current_setting(%s), set_config(%s, %s, true)" for _ in names)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT {pairs}", [x for n in names for x in (n, n, wanted[n])])
        found = cursor.fetchone()
        before = {n: found[2 * i] for i, n in enumerate(names)}
        yield
        restore = ", ".join("set_config(%s, %s, true)" for _ in names)
        cursor.execute(f"SELECT {restore}", [x for n in names for x in (n, before[n])])


def queue_page(query: QueueQuery, *, size: int = PAGE_SIZE) -> QueuePage:
    """One keyset page of the queue. Raises :class:`StaleCursor` when the cursor names no claim."""
    with interactive():
        return _queue_page(query, size)


def _queue_page(query: QueueQuery, size: int) -> QueuePage:
    key, descending, _ = SORTS[query.sort]
    qs = queue_filtered(query)
    few = bool(query.failed_check) and failures_are_few(query.failed_check)
    if query.before is not None:
        boundary = _boundary(query.before, key)
        back = _walk(qs, key, descending, boundary, size + 1, back=True, sort_matches=few)
        if len(back) <= size:  # we are back at the start: show a full first page
            return _queue_page(replace(query, before=None), size)
        claims = list(reversed(back[:size]))
        return QueuePage(queue_rows(claims), claims[-1].pk, claims[0].pk)
    boundary = _boundary(query.after, key) if query.after is not None else None
    claims = _walk(qs, key, descending, boundary, size + 1, sort_matches=few)
    more = len(claims) > size
    claims = claims[:size]
    return QueuePage(
        queue_rows(claims),
        claims[-1].pk if more and claims else None,
        claims[0].pk if query.after is not None and claims else None,
    )


def queue_rows_by_id(ids: list[int]) -> list[QueueRow]:
    """The rows of these claims as they stand now (live updates and bulk results)."""
    claims = list(_rows_of(Claim.objects.filter(pk__in=ids)))
    return queue_rows(claims)


def status_counts(query: QueueQuery, *, cap: int = COUNT_CAP) -> dict[str, int | None]:
    """How many claims of each status match the other filters, counting at most ``cap`` per
    status (``cap`` means "at least"); the key "" is every status together. One statement of
    capped index scans, under ``COUNT_TIMEOUT_MS``: past it every count is None (unknown)."""
    base = queue_filtered(query, with_status=False).order_by()
    names = ["", *(s.value for s in S)]
    if query.failed_check and failures_are_few(query.failed_check, COUNT_FAILURES):
        # at most that many matches: one pass over them, from the failures, counts them exactly
        try:
            with interactive(statement_timeout=f"{COUNT_TIMEOUT_MS}ms"):
                by_status = base.values_list("status").annotate(n=Count("pk")).order_by()
                found = dict(by_status)
        except DatabaseError:  # the statement timed out: "unknown", never a 500
            return dict.fromkeys(names, None)
        return {"": sum(found.values()), **{name: found.get(name, 0) for name in names[1:]}}
    wanted: list[tuple[str, QuerySet]] = [("", base)]
    wanted += [(s.value, base.filter(status=s.value)) for s in S]
    parts, params = [], []
    for name, qs in wanted:
        sql, sql_params = qs.values("pk")[:cap].query.sql_with_params()
        parts.append(f"SELECT %s, (SELECT count(*) FROM ({sql}) AS capped)")  # noqa: S608
        params += [name, *sql_params]
    try:
        with interactive(statement_timeout=f"{COUNT_TIMEOUT_MS}ms"), connection.cursor() as c:
            c.execute(" UNION ALL ".join(parts), params)
            return dict(c.fetchall())
    except DatabaseError:  # the statement timed out: "unknown", never a 500
        return dict.fromkeys(names, None)
