"""Reading the audit trail for the auditor's page: filters, keyset pages, chain status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Max, QuerySet

from audit.models import AuditEntry, ChainAnchor
from ledger.models import Checkpoint

PAGE = 50
TARGET_KINDS = ("claim", "key", "payout", "provider", "job")
# The actions written today (the filter takes any): offered as suggestions on the page.
KNOWN_ACTIONS = (
    "claim.submit",
    "claim.status",
    "claim.hold",
    "claim.release",
    "claim.approve",
    "claim.deny",
    "claim.request_info",
    "claim.answer_info",
    "item.approve",
    "item.deny",
    "item.adjust",
    "payout.create",
    "key.register",
    "key.revoke",
)


class FilterError(ValueError):
    """A filter the page cannot apply; the message is for people."""


@dataclass(frozen=True)
class TrailFilter:
    action: str = ""
    actor: str = ""
    target: str = ""
    since: date | None = None
    until: date | None = None

    @property
    def active(self) -> bool:
        return any((self.action, self.actor, self.target, self.since, self.until))

    def query(self) -> dict[str, str]:
        """The filter as query parameters (for the next page's link)."""
        out = {"action": self.action, "actor": self.actor, "target": self.target}
        out |= {"since": self.since.isoformat() if self.since else ""}
        out |= {"until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}


def _date(value: str, what: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"The {what} date must be a date like 2026-11-25.") from None


def filter_parse(params) -> TrailFilter:
    """The filter from the page's query string; raises FilterError for a bad date."""
    found = TrailFilter(
        action=params.get("action", "").strip()[:50],
        actor=params.get("actor", "").strip()[:150],
        target=params.get("target", "").strip()[:120],
        since=_date(params.get("since", ""), "from"),
        until=_date(params.get("until", ""), "to"),
    )
    if found.since and found.until and found.since > found.until:
        raise FilterError("The 'from' date is after the 'to' date.")
    return found


def _filtered(f: TrailFilter) -> QuerySet[AuditEntry]:
    qs = AuditEntry.objects.all()
    if f.action:
        # "claim" finds claim.approve, claim.deny...; "claim.deny" finds exactly that
        qs = (
            qs.filter(action=f.action)
            if "." in f.action
            else qs.filter(action__startswith=f.action + ".")
        )
    if f.actor:
        qs = qs.filter(actor_label=f.actor)
    if f.target:
        if ":" in f.target:
            qs = qs.filter(target=f.target)
        else:  # a bare claim id, key id...: every kind of target, each an exact, indexed match
            qs = qs.filter(target__in=[f"{kind}:{f.target}" for kind in TARGET_KINDS])
    if f.since:
        qs = qs.filter(at__gte=datetime.combine(f.since, time.min, tzinfo=UTC))
    if f.until:
        qs = qs.filter(at__lt=datetime.combine(f.until + timedelta(days=1), time.min, tzinfo=UTC))
    return qs


@dataclass
class Row:
    entry: AuditEntry
    anchor: ChainAnchor | None = None  # the first anchor at or after the entry's sequence
    sealed: bool = False  # that anchor's leaf is in a signed checkpoint

    @property
    def hash_hex(self) -> str:
        return bytes(self.entry.hash).hex() if self.entry.hash is not None else ""


@dataclass
class TrailPage:
    rows: list[Row] = field(default_factory=list)
    next_before: int | None = None  # the id to continue from (older entries), if any


def trail_page(f: TrailFilter, *, before: int | None = None, size: int = PAGE) -> TrailPage:
    """Newest first, ``size`` entries with an id below ``before`` (keyset pagination)."""
    qs = _filtered(f)
    if before is not None:
        qs = qs.filter(id__lt=before)
    entries = list(qs.order_by("-id")[: size + 1])
    page = TrailPage()
    if len(entries) > size:
        entries = entries[:size]
        page.next_before = entries[-1].pk
    seqs = [e.seq for e in entries if e.seq is not None]
    anchors: list[ChainAnchor] = []
    if seqs:
        last = ChainAnchor.objects.filter(seq__gte=max(seqs)).order_by("seq").first()
        window = ChainAnchor.objects.filter(seq__gte=min(seqs))
        if last is not None:
            window = window.filter(seq__lte=last.seq)
        anchors = list(window.order_by("seq"))
    sealed_size = Checkpoint.objects.aggregate(size=Max("size"))["size"] or 0
    for entry in entries:
        row = Row(entry)
        if entry.seq is not None:
            row.anchor = next((a for a in anchors if a.seq >= entry.seq), None)
            row.sealed = row.anchor is not None and row.anchor.leaf_index < sealed_size
        page.rows.append(row)
    return page


@dataclass(frozen=True)
class TrailSummary:
    entries: int  # chained + pending: no full count of a long table
    pending: int
    head_seq: int
    head: bytes | None
    last_anchor: ChainAnchor | None
    actions: list[str]


def trail_summary() -> TrailSummary:
    pending = AuditEntry.objects.filter(seq__isnull=True).count()  # the partial index
    head = (
        AuditEntry.objects.filter(seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", "hash")
        .first()
    )
    return TrailSummary(
        entries=(head[0] if head else 0) + pending,
        pending=pending,
        head_seq=head[0] if head else 0,
        head=bytes(head[1]) if head else None,
        last_anchor=ChainAnchor.objects.order_by("-seq").first(),
        actions=list(KNOWN_ACTIONS),
    )
