"""A claim's page in the adjuster workspace: its FHIR content, every verification check with its
evidence (each procedure's inclusion path drawn and re-verified against the signed checkpoint),
the decisions on it, requests for information with the provider's answers, and its history.

Decisions are htmx POSTs that swap the decision panel (and, out of band, the panels a decision
changes); without JavaScript the same forms post and redirect back. Every decision is a call to
``review.services``: this module only reads, parses form fields and renders.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh

from claims import money
from claims.checks.ledger import PREFIX as PROCEDURE_CHECK
from claims.models import Claim, ClaimCheck, ClaimEvent, ClaimItem
from claims.states import ClaimStatus
from config.errors import DomainError, Unprocessable
from ledger import charts, keys, merkle, note
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.checkpoint import CheckpointError
from ledger.models import Checkpoint, Member
from review import reasons, services
from review.models import Approval, Hold, InfoRequest, Payout
from review.roles import Ability, can, requires

S = ClaimStatus
WORKING = frozenset({S.RECEIVED, S.VERIFYING})
OUTCOME_BADGE = {"pass": "ok", "warn": "warn", "wait": "warn", "fail": "bad"}
STATUS_BADGE = {
    S.VERIFIED: "ok",
    S.APPROVED: "ok",
    S.PAID: "ok",
    S.NEEDS_REVIEW: "warn",
    S.INFO_REQUESTED: "warn",
    S.RECEIVED: "warn",
    S.VERIFYING: "warn",
    S.REJECTED: "bad",
    S.DENIED: "bad",
}
ITEM_BADGE = {"approved": "ok", "adjusted": "warn", "denied": "bad", "pending": "warn"}


# --- reading the claim's FHIR content ------------------------------------------------------------


def _text(concept: object) -> str:
    """A CodeableConcept (or Coding) as one line: its text, else display (system|code)."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    codings = concept.get("coding") if "coding" in concept else [concept]
    parts = []
    for c in codings if isinstance(codings, list) else []:
        if not isinstance(c, dict):
            continue
        code = f"{c.get('system', '')}|{c.get('code', '')}".strip("|")
        parts.append(f"{c['display']} ({code})" if c.get("display") else code)
    return ", ".join(p for p in parts if p)


def _ref(reference: object) -> str:
    if not isinstance(reference, dict):
        return ""
    return str(reference.get("display") or reference.get("reference") or "")


def _amount(m: object) -> str:
    if not isinstance(m, dict) or m.get("value") is None:
        return ""
    return f"{m['value']} {m.get('currency', '')}".strip()


@dataclass
class FhirItem:
    sequence: int
    service: str
    serviced: str
    quantity: str
    unit_price: str
    net: str
    procedures: list[str]


@dataclass
class FhirProcedure:
    sequence: object
    full_url: str
    code: str
    status: str
    performed: str
    subject: str


@dataclass
class FhirContent:
    """What the Bundle says, for people: the Claim, its Procedures and its context."""

    claim_type: str = ""
    use: str = ""
    patient: str = ""
    created: str = ""
    insurer: str = ""
    provider: str = ""
    priority: str = ""
    total: str = ""
    coverage: list[str] = field(default_factory=list)
    items: dict[int, FhirItem] = field(default_factory=dict)
    procedures: list[FhirProcedure] = field(default_factory=list)
    context: list[dict] = field(default_factory=list)  # Coverage, Organization, ... as facts
    error: str = ""


def _performed(proc: dict) -> str:
    if proc.get("performedDateTime"):
        return str(proc["performedDateTime"])
    period = proc.get("performedPeriod")
    if isinstance(period, dict):
        return f"{period.get('start', '?')} to {period.get('end', '?')}"
    return ""


def _context_facts(resource: dict) -> dict:
    kind = resource.get("resourceType", "")
    facts: list[tuple[str, str]] = []
    if kind == "Coverage":
        period = resource.get("period") or {}
        facts = [
            ("Status", str(resource.get("status", ""))),
            ("Beneficiary", _ref(resource.get("beneficiary"))),
            ("Payor", ", ".join(_ref(p) for p in resource.get("payor") or [])),
            ("Period", f"{period.get('start', '…')} to {period.get('end', '…')}"),
            ("Plan", _text(resource.get("type"))),
        ]
    elif kind in ("Organization", "Practitioner", "Patient"):
        name = resource.get("name")
        if isinstance(name, list):
            name = ", ".join(
                n.get("text") or " ".join([*n.get("given", []), n.get("family", "")])
                for n in name
                if isinstance(n, dict)
            )
        ids = resource.get("identifier") or []
        facts = [
            ("Name", str(name or "")),
            ("Identifier", ", ".join(str(i.get("value", "")) for i in ids if isinstance(i, dict))),
        ]
    return {
        "kind": kind,
        "id": str(resource.get("id", "")),
        "facts": [(k, v) for k, v in facts if v and v.strip()],
    }


def fhir_content(claim: Claim) -> FhirContent:
    """The claim's Bundle as readable facts; never raises (the page shows what it can)."""
    out = FhirContent()
    try:
        bundle = money.loads(bytes(claim.body))
    except ValueError as exc:
        out.error = f"The stored Bundle cannot be read: {exc}"
        return out
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    resources = [(e.get("fullUrl", ""), e.get("resource") or {}) for e in entries]
    source = next((r for _, r in resources if r.get("resourceType") == "Claim"), None)
    if source is None:
        out.error = "The Bundle holds no Claim."
        return out
    by_url = {url: r for url, r in resources if url}
    out.claim_type = _text(source.get("type"))
    out.use = str(source.get("use", ""))
    out.patient = _ref(source.get("patient"))
    out.created = str(source.get("created", ""))
    out.insurer = _ref(source.get("insurer"))
    out.provider = _ref(source.get("provider"))
    out.priority = _text(source.get("priority"))
    out.total = _amount(source.get("total"))
    out.coverage = [
        _ref(i.get("coverage")) for i in source.get("insurance") or [] if isinstance(i, dict)
    ]
    by_seq: dict[object, str] = {}
    for p in source.get("procedure") or []:
        if not isinstance(p, dict):
            continue
        url = _ref(p.get("procedureReference"))
        proc = by_url.get(url) or {}
        by_seq[p.get("sequence")] = url
        out.procedures.append(
            FhirProcedure(
                sequence=p.get("sequence"),
                full_url=url,
                code=_text(proc.get("code")) or _text(p.get("procedureCodeableConcept")),
                status=str(proc.get("status", "")),
                performed=_performed(proc) or str(p.get("date", "")),
                subject=_ref(proc.get("subject")),
            )
        )
    for item in source.get("item") or []:
        if not isinstance(item, dict) or not isinstance(item.get("sequence"), int):
            continue
        quantity = item.get("quantity")
        out.items[item["sequence"]] = FhirItem(
            sequence=item["sequence"],
            service=_text(item.get("productOrService")),
            serviced=str(item.get("servicedDate") or ""),
            quantity=str(quantity.get("value", "")) if isinstance(quantity, dict) else "",
            unit_price=_amount(item.get("unitPrice")),
            net=_amount(item.get("net")),
            procedures=[by_seq.get(s, f"#{s}") for s in item.get("procedureSequence") or []],
        )
    out.context = [
        _context_facts(r)
        for _, r in resources
        if r.get("resourceType") in ("Coverage", "Organization", "Practitioner", "Patient")
    ]
    return out


# --- the checks and their evidence --------------------------------------------------------------


@dataclass
class Cosigner:
    member: str
    display: str
    at: datetime | None


@dataclass
class ProofView:
    """One procedure's inclusion proof, re-verified here against the signed checkpoint."""

    leaf_index: int
    leaf_hash: str
    commitment: str
    member: str
    anchored_at: str
    size: int
    root_hash: str
    quorum: int
    final: bool
    cosigners: list[Cosigner]
    proof: list[str]
    verified: bool
    verdict: str
    svg: SafeString | None


@dataclass
class CheckView:
    name: str
    label: str
    outcome: str
    badge: str
    sentence: str
    evidence: dict
    evidence_json: str
    proof: ProofView | None = None

    @property
    def is_signature(self) -> bool:
        return self.name == "signature"


def _b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64")
    return base64.b64decode(text, validate=True)


def _utc(ts: object) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if isinstance(ts, int) else None


def _signed_root(size: int, memo: dict[int, tuple[bytes | None, str]]) -> tuple[bytes | None, str]:
    """The root of the log's checkpoint of ``size``, read from its operator-signed note (once
    per page: ``memo``)."""
    if size not in memo:
        memo[size] = _read_signed_root(size)
    return memo[size]


def _read_signed_root(size: int) -> tuple[bytes | None, str]:
    row = Checkpoint.objects.filter(size=size).first()
    if row is None:
        return None, f"the log has no checkpoint of size {size}"
    try:
        body = CheckpointBody.parse(note.verify(row.note, [keys.operator_verifier_key()]).text)
    except (note.NoteError, CheckpointError, OSError) as exc:
        return None, f"checkpoint {size} does not verify under the log operator's key ({exc})"
    return body.root_hash, ""


def proof_view(
    evidence: dict, members: dict[str, str], memo: dict | None = None
) -> ProofView | None:
    """Redo the proof from the check's evidence: the leaf hash, the path, and the root of the
    checkpoint as the log operator signed it. None when the evidence holds no proof."""
    checkpoint = evidence.get("checkpoint")
    if not isinstance(checkpoint, dict) or "proof" not in evidence:
        return None
    try:
        index, size = int(evidence["leaf_index"]), int(checkpoint["size"])
        leaf_hash = _b64(evidence["leaf_hash"])
        path_hashes = [_b64(h) for h in evidence["proof"]]
        root = _b64(checkpoint["root_hash"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    verified, verdict = False, ""
    signed_root, problem = _signed_root(size, {} if memo is None else memo)
    try:
        merkle.verify_inclusion(index, size, leaf_hash, path_hashes, root)
        if signed_root is None:
            raise merkle.ProofError(problem)
        if signed_root != root:
            raise merkle.ProofError(f"the signed checkpoint {size} has another root")
    except merkle.ProofError as exc:
        verdict = f"Not verified on this page: {exc}."
    else:
        verified = True
        verdict = (
            f"Verified on this page: the path leads from leaf {index} to the root of checkpoint "
            f"{size}, as the log operator signed it (RFC 9162 inclusion proof)."
        )
    cosigners = [
        Cosigner(
            c.get("member", ""), members.get(c.get("member", ""), ""), _utc(c.get("timestamp"))
        )
        for c in checkpoint.get("cosigners") or []
        if isinstance(c, dict)
    ]
    svg = charts.inclusion_path_svg(index, size, leaf_hash, path_hashes, verified=verified)
    return ProofView(
        leaf_index=index,
        leaf_hash=evidence["leaf_hash"],
        commitment=str(evidence.get("commitment", "")),
        member=str(evidence.get("member", "")),
        anchored_at=str(evidence.get("anchored_at", "")),
        size=size,
        root_hash=checkpoint["root_hash"],
        quorum=int(checkpoint.get("quorum") or 0),
        final=bool(checkpoint.get("final")),
        cosigners=cosigners,
        proof=list(evidence["proof"]),
        verified=verified,
        verdict=verdict,
        # charts.* escape every value they interpolate
        svg=mark_safe(svg),  # noqa: S308
    )


def _label(name: str) -> str:
    if name.startswith(PROCEDURE_CHECK):
        return f"Procedure {name[len(PROCEDURE_CHECK) :]}"
    return {
        "signature": "Signature",
        "fhir": "FHIR validity and totals",
        "binding": "Binding to the provider and patient",
        "double_billing": "No double billing",
        "business": "Business rules",
    }.get(name, name)


def check_views(claim: Claim) -> list[CheckView]:
    if not claim.verification_runs:
        return []
    rows = list(ClaimCheck.objects.filter(claim=claim, run=claim.verification_runs).order_by("id"))
    members = {m.name: str(m) for m in Member.objects.all()}
    memo: dict[int, tuple[bytes | None, str]] = {}
    views = []
    for row in rows:
        evidence = row.evidence if isinstance(row.evidence, dict) else {}
        views.append(
            CheckView(
                name=row.name,
                label=_label(row.name),
                outcome=row.outcome,
                badge=OUTCOME_BADGE.get(row.outcome, "warn"),
                sentence=row.sentence,
                evidence=evidence,
                evidence_json=json.dumps(evidence, indent=2, sort_keys=True, ensure_ascii=False),
                proof=proof_view(evidence, members, memo)
                if row.name.startswith(PROCEDURE_CHECK)
                else None,
            )
        )
    return views


# --- the answers to requests for information ---------------------------------------------------


def _data_size(data: object) -> int | None:
    if not isinstance(data, str):
        return None
    try:
        return len(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        return None


def attachment_view(resource: object) -> dict | None:
    """A FHIR DocumentReference or Binary as facts to print as text: never inlined, never run."""
    if not isinstance(resource, dict):
        return None
    kind = resource.get("resourceType", "")
    if kind == "Binary":
        return {
            "kind": kind,
            "facts": [
                ("Content type", str(resource.get("contentType", ""))),
                ("Size", _size_text(_data_size(resource.get("data")))),
            ],
            "files": [],
        }
    files = []
    for content in resource.get("content") or []:
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(attachment, dict):
            continue
        size = attachment.get("size")
        size = size if isinstance(size, int) else _data_size(attachment.get("data"))
        files.append(
            {
                "title": str(attachment.get("title", "")) or "(untitled)",
                "content_type": str(attachment.get("contentType", "")),
                "size": _size_text(size),
                "url": str(attachment.get("url", "")),
                "creation": str(attachment.get("creation", "")),
                "inline": "data" in attachment,
            }
        )
    facts = [
        ("Description", str(resource.get("description", ""))),
        ("Status", str(resource.get("status", ""))),
        ("Type", _text(resource.get("type"))),
        ("Date", str(resource.get("date", ""))),
        ("Author", ", ".join(_ref(a) for a in resource.get("author") or [])),
    ]
    return {"kind": kind, "facts": [(k, v) for k, v in facts if v], "files": files}


def _size_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KiB ({size} bytes)"


# --- the page's context ------------------------------------------------------------------------


@dataclass
class Decision:
    """Where the claim stands for the person looking at it."""

    decidable: bool
    can_decide: bool
    can_senior: bool
    hold: Hold | None
    hold_stale: bool
    mine: bool
    approvals: list[Approval]
    needed: int
    four_eyes_above: Decimal
    senior_above: Decimal
    already_approved: bool
    payout: Payout | None

    @property
    def held_by_other(self) -> bool:
        return self.hold is not None and not self.mine and not self.hold_stale

    @property
    def items_locked(self) -> bool:
        return bool(self.approvals)

    @property
    def senior_needed(self) -> bool:
        return self.senior_needed_for_total and not any(a.senior for a in self.approvals)

    senior_needed_for_total: bool = False


def decision(claim: Claim, user) -> Decision:
    hold = Hold.objects.select_related("user").filter(claim=claim).first()
    approvals = list(
        Approval.objects.select_related("user").filter(claim=claim, round=claim.verification_runs)
    )
    total = claim.total or Decimal(0)
    return Decision(
        decidable=claim.status in services.DECIDABLE,
        can_decide=can(user, Ability.DECIDE),
        can_senior=can(user, Ability.SENIOR_DECIDE),
        hold=hold,
        hold_stale=hold is not None and services.hold_is_stale(hold),
        mine=hold is not None and hold.user_id == user.pk,
        approvals=approvals,
        needed=services.approvals_needed(claim),
        four_eyes_above=services.four_eyes_above(),
        senior_above=services.senior_above(),
        already_approved=any(a.user_id == user.pk for a in approvals),
        payout=Payout.objects.filter(claim=claim).first(),
        senior_needed_for_total=total > services.senior_above(),
    )


@dataclass
class ItemRow:
    item: ClaimItem
    fhir: FhirItem | None
    badge: str

    @property
    def reason(self) -> str:
        return reasons.DENIAL_REASONS.get(self.item.reason_code, "")


def _claim(public_id) -> Claim:
    return get_object_or_404(Claim.objects.select_related("provider"), public_id=public_id)


def panels_context(claim: Claim, user, content: FhirContent | None = None) -> dict[str, Any]:
    """What the decision, items, requests and history panels need (also after a decision)."""
    content = content or fhir_content(claim)
    items = [
        ItemRow(i, content.items.get(i.sequence), ITEM_BADGE.get(i.adjudication, "warn"))
        for i in ClaimItem.objects.filter(claim=claim).order_by("sequence")
    ]
    requests = list(
        InfoRequest.objects.select_related("requested_by", "answered_by")
        .filter(claim=claim)
        .order_by("requested_at", "pk")
    )
    for r in requests:
        r.reason_label = reasons.INFO_REASONS.get(r.reason_code, r.reason_code)
        r.attachment_view = attachment_view(r.attachment)
    return {
        "claim": claim,
        "status_badge": STATUS_BADGE.get(claim.status, "warn"),
        "d": decision(claim, user),
        "items": items,
        "info_requests": requests,
        "events": list(
            ClaimEvent.objects.select_related("actor").filter(claim=claim).order_by("at", "id")
        ),
        "denial_reasons": sorted(reasons.DENIAL_REASONS.items(), key=lambda kv: int(kv[0])),
        "info_reasons": list(reasons.INFO_REASONS.items()),
        "working": claim.status in WORKING,
    }


def page_context(claim: Claim, user) -> dict[str, Any]:
    content = fhir_content(claim)
    return {
        **panels_context(claim, user, content),
        "fhir": content,
        "checks": check_views(claim),
    }


# --- views -------------------------------------------------------------------------------------


@require_GET
@requires(Ability.READ_CLAIMS)
def claim_page(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)
    return render(request, "review/claim.html", page_context(claim, request.user))


@require_GET
@requires(Ability.READ_CLAIMS)
def claim_live(request: HttpRequest, public_id) -> HttpResponse:
    """The small status partial the page polls while verification runs; once it is over the
    whole page reloads (its checks and evidence are new)."""
    claim = _claim(public_id)
    if claim.status not in WORKING and getattr(request, "htmx", False):
        return HttpResponseClientRefresh()
    return render(
        request, "review/_claim_live.html", {"claim": claim, "working": claim.status in WORKING}
    )


def _decided(request: HttpRequest, claim: Claim, action, *, panel: str = "decide") -> HttpResponse:
    """Run ``action`` (a call to review.services); answer with the panels, or redirect back."""
    try:
        message = action()
    except DomainError as exc:
        message, kind, status = exc.detail, "error", exc.status_code
    else:
        kind, status = "ok", 200
    claim.refresh_from_db()
    if not getattr(request, "htmx", False):
        if status == 200:
            messages.success(request, message)
            return redirect(reverse("review:claim", args=[claim.public_id]))
        context = page_context(claim, request.user)
        context.update(message=message, message_kind=kind, message_panel=panel)
        return render(request, "review/claim.html", context, status=status)
    context = panels_context(claim, request.user)
    context.update(message=message, message_kind=kind, message_panel=panel)
    return render(request, "review/_claim_panels.html", context, status=status)


@require_POST
@requires(Ability.DECIDE)
def claim_take(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)
    take_over = request.POST.get("take_over") == "1"

    def act() -> str:
        services.claim_hold(claim_id=claim.pk, user=request.user, take_over=take_over)
        return "You are reviewing this claim; others see that you hold it."

    return _decided(request, claim, act)


@require_POST
@requires(Ability.DECIDE)
def claim_release(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)

    def act() -> str:
        services.claim_release(claim_id=claim.pk, user=request.user)
        return "Released: anyone may take this claim."

    return _decided(request, claim, act)


@require_POST
@requires(Ability.DECIDE)
def claim_approve(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)
    note_text = request.POST.get("note", "").strip()[:2000]

    def act() -> str:
        result = services.claim_approve(claim_id=claim.pk, user=request.user, note=note_text)
        return result.message[:1].upper() + result.message[1:] + "."

    return _decided(request, claim, act)


@require_POST
@requires(Ability.DECIDE)
def claim_deny(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)

    def act() -> str:
        services.claim_deny(
            claim_id=claim.pk,
            user=request.user,
            reason_code=request.POST.get("reason_code", ""),
            text=request.POST.get("text", "")[:2000],
        )
        return "Denied; the provider's ClaimResponse gives the reason."

    return _decided(request, claim, act)


@require_POST
@requires(Ability.DECIDE)
def claim_request_info(request: HttpRequest, public_id) -> HttpResponse:
    claim = _claim(public_id)

    def act() -> str:
        services.claim_request_info(
            claim_id=claim.pk,
            user=request.user,
            reason_code=request.POST.get("reason_code", ""),
            question=request.POST.get("question", "")[:2000],
        )
        return "Information requested; the claim waits for the provider's answer."

    return _decided(request, claim, act)


def _amount_field(value: str) -> Decimal | None:
    value = value.strip().replace(",", "")
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise Unprocessable(f"“{value[:20]}” is not an amount", code="amount") from None


@require_POST
@requires(Ability.DECIDE)
def claim_item(request: HttpRequest, public_id, sequence: int) -> HttpResponse:
    claim = _claim(public_id)
    action = request.POST.get("action", "")

    def act() -> str:
        amount = _amount_field(request.POST.get("amount", "")) if action == "adjust" else None
        item = services.item_decide(
            claim_id=claim.pk,
            user=request.user,
            sequence=sequence,
            action=action,
            amount=amount,
            reason_code=request.POST.get("reason_code", ""),
        )
        return (
            f"Item {item.sequence}: {item.adjudication}, benefit {item.benefit} {claim.currency}."
        )

    return _decided(request, claim, act, panel="items")


_ID = "claims/<uuid:public_id>/"
urls = [
    path(_ID, claim_page, name="claim"),
    path(_ID + "live", claim_live, name="claim-live"),
    path(_ID + "take", claim_take, name="claim-take"),
    path(_ID + "release", claim_release, name="claim-release"),
    path(_ID + "approve", claim_approve, name="claim-approve"),
    path(_ID + "deny", claim_deny, name="claim-deny"),
    path(_ID + "request-info", claim_request_info, name="claim-request-info"),
    path(_ID + "items/<int:sequence>", claim_item, name="claim-item"),
]
