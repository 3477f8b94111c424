"""Every adjuster decision: holds, item adjudication, approval (four-eyes), denial, requests
for information and the provider's answer, bulk approval, and the one payout an approval makes.

Each decision runs in one transaction that locks the claim row first, so two adjusters (or one
adjuster's double click) are serialised; the status change goes through ``claims.states``; the
unique constraints on ``Approval`` and ``Payout`` make a second approval by the same person, or
a second payout, impossible even if a lock were missed. Every action writes an audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from claims.models import Claim, ClaimItem
from claims.states import ClaimStatus, ConcurrentTransition, claim_transition
from config.errors import Conflict, DomainError, NotFound, Unprocessable
from review import reasons
from review.models import Approval, Hold, InfoRequest, Payout
from review.roles import Ability, can

S = ClaimStatus
DECIDABLE = frozenset({S.VERIFIED, S.NEEDS_REVIEW})
ITEM = ClaimItem.Adjudication
ATTACHMENT_TYPES = ("DocumentReference", "Binary")
DOCUMENT_STATUSES = ("current", "superseded", "entered-in-error")


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


def four_eyes_above() -> Decimal:
    return Decimal(settings.REVIEW_FOUR_EYES_ABOVE)


def senior_above() -> Decimal:
    return Decimal(settings.REVIEW_SENIOR_ABOVE)


def claim_amount(claim: Claim) -> Decimal:
    """What the claim asks for: its total, or the sum of its items when it states none (FHIR
    makes Claim.total optional; the thresholds must not read a missing total as zero)."""
    items = ClaimItem.objects.filter(claim=claim).values_list("submitted", flat=True)
    return max(claim.total or Decimal(0), sum(items, Decimal(0)))


def approvals_needed(claim: Claim) -> int:
    return 2 if claim_amount(claim) > four_eyes_above() else 1


def _target(claim: Claim) -> str:
    return f"claim:{claim.public_id}"


def _locked(claim_id: int) -> Claim:
    """The claim row, locked until the end of the caller's transaction."""
    try:
        return Claim.objects.select_for_update().select_related("provider").get(pk=claim_id)
    except Claim.DoesNotExist:
        raise NotFound("no such claim") from None


def _require(user, ability: Ability) -> None:
    if not can(user, ability):
        raise Forbidden(f"your role does not allow this ({ability})")


def _hold_of(claim: Claim) -> Hold | None:
    return Hold.objects.select_related("user").filter(claim=claim).first()


def hold_is_stale(hold: Hold) -> bool:
    """Older than ``REVIEW_HOLD_TTL_S``: it no longer keeps anyone from deciding."""
    return timezone.now() - hold.since > timedelta(seconds=settings.REVIEW_HOLD_TTL_S)


def _check_not_held_by_other(claim: Claim, user) -> None:
    hold = _hold_of(claim)
    if hold and hold.user_id != user.pk and not hold_is_stale(hold):
        raise Conflict(
            f"{hold.user.get_username()} is reviewing this claim (since {hold.since:%H:%M} UTC)",
            code="held_by_other",
            extra={"held_by": hold.user.get_username()},
        )


def _check_decidable(claim: Claim) -> None:
    if claim.status not in DECIDABLE:
        raise Conflict(
            f"the claim is {claim.get_status_display()}; only verified claims and claims that "
            "need review can be decided",
            code="not_decidable",
        )


def _check_no_pending_approval(claim: Claim) -> None:
    """Between the two approvals of a four-eyes claim, what the first approver saw must not
    change: no item decision, no request for information (the second adjuster may deny)."""
    if Approval.objects.filter(claim=claim, round=claim.verification_runs).exists():
        raise Conflict(
            "the claim already has a first approval; it can no longer change "
            "(deny it, or let a second adjuster approve it)",
            code="approval_pending",
        )


def _release(claim: Claim) -> None:
    Hold.objects.filter(claim=claim).delete()


# --- holds ----------------------------------------------------------------------------------


def claim_hold(*, claim_id: int, user, take_over: bool = False) -> Hold:
    """Mark the claim as under review by ``user``. A hold by someone else is refused unless it
    is stale (``REVIEW_HOLD_TTL_S``) or a senior adjuster takes it over."""
    _require(user, Ability.DECIDE)
    with transaction.atomic():
        claim = _locked(claim_id)
        _check_decidable(claim)
        hold = _hold_of(claim)
        if hold and hold.user_id == user.pk:
            return hold
        if hold and not hold_is_stale(hold):
            if not take_over:
                _check_not_held_by_other(claim, user)
            _require(user, Ability.SENIOR_DECIDE)
        previous = hold.user.get_username() if hold else ""
        Hold.objects.filter(claim=claim).delete()
        hold = Hold.objects.create(claim=claim, user=user, since=timezone.now())
        audit_record(
            actor=user,
            action="claim.hold",
            target=_target(claim),
            why=f"taken over from {previous}" if previous else "",
        )
        return hold


def claim_release(*, claim_id: int, user) -> None:
    _require(user, Ability.DECIDE)
    with transaction.atomic():
        claim = _locked(claim_id)
        hold = _hold_of(claim)
        if hold is None:
            return
        if hold.user_id != user.pk:
            _require(user, Ability.SENIOR_DECIDE)
        hold.delete()
        audit_record(actor=user, action="claim.release", target=_target(claim))


# --- items ----------------------------------------------------------------------------------


def item_decide(
    *,
    claim_id: int,
    user,
    sequence: int,
    action: str,
    amount: Decimal | None = None,
    reason_code: str = "",
) -> ClaimItem:
    """Approve, adjust (to an allowed amount, with a reason) or deny (with a reason) one line."""
    _require(user, Ability.DECIDE)
    with transaction.atomic():
        claim = _locked(claim_id)
        _check_decidable(claim)
        _check_not_held_by_other(claim, user)
        _check_no_pending_approval(claim)
        try:
            item = ClaimItem.objects.get(claim=claim, sequence=sequence)
        except ClaimItem.DoesNotExist:
            raise NotFound(f"the claim has no item {sequence}") from None
        if action == "approve":
            item.adjudication, item.eligible = ITEM.APPROVED, item.submitted
            item.benefit = item.submitted
            item.reason_code = ""
        elif action == "adjust":
            if reason_code not in reasons.ADJUSTMENT_REASONS:
                raise Unprocessable("choose a reason code for the adjustment", code="reason")
            _check_allowed(amount, item.submitted)
            item.adjudication, item.eligible, item.benefit = ITEM.ADJUSTED, amount, amount
            item.reason_code = reason_code
        elif action == "deny":
            if reason_code not in reasons.DENIAL_REASONS:
                raise Unprocessable("choose a reason code for the denial", code="reason")
            item.adjudication, item.eligible, item.benefit = ITEM.DENIED, Decimal(0), Decimal(0)
            item.reason_code = reason_code
        else:
            raise Unprocessable(f"unknown item action {action!r}", code="action")
        item.save(update_fields=["adjudication", "eligible", "benefit", "reason_code"])
        audit_record(
            actor=user,
            action=f"item.{action}",
            target=_target(claim),
            why=reasons.reason_label(reason_code) if reason_code else "",
            data={"item": sequence, "benefit": str(item.benefit), "reason": reason_code},
        )
        return item


def _check_allowed(amount: Decimal | None, submitted: Decimal) -> None:
    """An adjusted line's allowed amount: a finite Decimal, 0 <= amount < submitted, cents."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise Unprocessable("give the allowed amount as a number, e.g. 80.00", code="amount")
    if amount < 0 or amount >= submitted:
        raise Unprocessable(
            f"the allowed amount must be at least 0 and below the submitted {submitted}",
            code="amount",
        )
    if amount.as_tuple().exponent < -2:
        raise Unprocessable("amounts have at most two decimals", code="amount")


# --- approve / deny -------------------------------------------------------------------------


@dataclass
class Approved:
    claim: Claim
    approval: Approval
    payout: Payout | None  # None while a four-eyes claim waits for its second approval
    needed: int
    given: int

    @property
    def message(self) -> str:
        if self.payout:
            p = self.payout
            return f"approved; payout {p.reference} of {p.amount} {p.currency}"
        return (
            f"first approval recorded; {self.needed - self.given} more needed from another adjuster"
        )


def _payable(claim: Claim) -> tuple[Decimal, list[ClaimItem]]:
    items = list(ClaimItem.objects.filter(claim=claim))
    pending = [i for i in items if i.adjudication == ITEM.PENDING]
    for item in pending:  # approving a claim approves its lines nobody decided
        item.adjudication, item.eligible, item.benefit = (
            ITEM.APPROVED,
            item.submitted,
            item.submitted,
        )
    if pending:
        ClaimItem.objects.bulk_update(pending, ["adjudication", "eligible", "benefit"])
    total = sum((i.benefit or Decimal(0) for i in items), Decimal("0.00"))
    return total, items


def claim_approve(
    *, claim_id: int, user, note: str = "", only_from: frozenset[str] = DECIDABLE
) -> Approved:
    """Record ``user``'s approval; when enough different adjusters approved (two above
    ``REVIEW_FOUR_EYES_ABOVE``, one of them senior above ``REVIEW_SENIOR_ABOVE``), move the claim
    to approved and create its one payout, all in one transaction. ``only_from`` narrows the
    states the claim may be in, checked under the lock (bulk approval takes verified only)."""
    _require(user, Ability.DECIDE)
    with transaction.atomic():
        claim = _locked(claim_id)
        _check_decidable(claim)
        if claim.status not in only_from:
            raise Conflict(f"the claim is {claim.get_status_display()} now", code="not_decidable")
        if claim.verdict == S.REJECTED:
            raise Conflict(
                "the latest verification rejected this claim (see its checks): deny it or "
                "request information",
                code="verdict_rejected",
            )
        _check_not_held_by_other(claim, user)
        items = list(ClaimItem.objects.filter(claim=claim))
        if items and all(i.adjudication == ITEM.DENIED for i in items):
            raise Conflict("every item is denied: deny the claim instead", code="all_denied")
        round_ = claim.verification_runs
        earlier = list(Approval.objects.filter(claim=claim, round=round_))
        if any(a.user_id == user.pk for a in earlier):
            raise Conflict(
                "you already approved this claim; a second approval must come from another "
                "adjuster",
                code="same_approver",
            )
        needed = approvals_needed(claim)
        senior = can(user, Ability.SENIOR_DECIDE)
        final = len(earlier) + 1 >= needed
        if (
            final
            and claim_amount(claim) > senior_above()
            and not (senior or any(a.senior for a in earlier))
        ):
            raise Forbidden(
                f"claims above {senior_above()} need a senior adjuster among the approvers",
                code="senior_required",
            )
        try:
            with transaction.atomic():
                approval = Approval.objects.create(
                    claim=claim,
                    round=round_,
                    user=user,
                    senior=senior,
                    note=note,
                    at=timezone.now(),
                )
        except IntegrityError:
            raise Conflict("you already approved this claim", code="same_approver") from None
        payout = None
        if final:
            amount, _ = _payable(claim)
            claim_transition(
                claim=claim,
                to=S.APPROVED,
                actor=user,
                reason=note or f"approved by {', '.join(_names(earlier, user))}",
            )
            payout, action, data = _payout_for(claim, amount, user)
            audit_record(
                actor=user,
                action=action,
                target=_target(claim),
                data={
                    "reference": payout.reference,
                    "amount": str(amount),
                    "currency": payout.currency,
                    "payee": claim.provider.name,
                    **data,
                },
            )
        _release(claim)
        audit_record(
            actor=user,
            action="claim.approve",
            target=_target(claim),
            why=note,
            data={"approval": len(earlier) + 1, "needed": needed},
        )
        return Approved(claim, approval, payout, needed, len(earlier) + 1)


def _payout_for(claim: Claim, amount: Decimal, user) -> tuple[Payout, str, dict]:
    """The claim's one payout: created at its first approval; at a later approval (its earlier
    one was taken away by a re-verification, which voided the payout) the same row is reissued
    with the new amount. Returns the payout, the audit action and what the audit adds."""
    now = timezone.now()
    payout = Payout.objects.select_for_update().filter(claim=claim).first()
    if payout is None:
        payout = Payout.objects.create(
            claim=claim,
            payee=claim.provider,
            amount=amount,
            currency=claim.currency,
            reference=f"PO-{claim.public_id.hex.upper()}",
            created_at=now,
            created_by=user,
        )
        return payout, "payout.create", {}
    if payout.settled_at is not None or payout.voided_at is None:  # cannot happen: the claim
        raise Conflict(  # would be paid, or approved (not decidable)
            f"payout {payout.reference} is already {'settled' if payout.settled_at else 'open'}",
            code="payout_exists",
        )
    from payments.models import PaymentRunItem

    # A run that took the payout before it was voided pays none of it now: a later run pays
    # the new amount (payments.services settles no released item).
    PaymentRunItem.objects.filter(
        payout=payout, settled_at__isnull=True, released_at__isnull=True
    ).update(released_at=now)
    before = {"previous_amount": str(payout.amount), "voided": payout.void_reason}
    payout.amount, payout.currency, payout.payee = amount, claim.currency, claim.provider
    payout.created_at, payout.created_by = now, user
    payout.voided_at, payout.void_reason = None, ""
    payout.save(
        update_fields=[
            "amount", "currency", "payee", "created_at", "created_by", "voided_at", "void_reason"
        ]
    )  # fmt: skip
    return payout, "payout.reissue", before


def payout_void(*, claim: Claim, reason: str, actor=None) -> Payout | None:
    """Take an approval's payout away (the claim left ``approved`` for the adjusters): no
    payment run pays it; a run that holds it unpaid releases it, so that the payout, approved
    again, can be paid by a later run. Call it inside the transaction that locks the claim.
    A settled payout is never voided (None is returned for it and for a claim without one)."""
    from payments.models import PaymentRunItem

    payout = Payout.objects.select_for_update().filter(claim=claim).first()
    if payout is None or payout.settled_at is not None or payout.voided_at is not None:
        return None
    now = timezone.now()
    payout.voided_at, payout.void_reason = now, reason[:1000]
    payout.save(update_fields=["voided_at", "void_reason"])
    PaymentRunItem.objects.filter(
        payout=payout, settled_at__isnull=True, released_at__isnull=True
    ).update(released_at=now)
    audit_record(
        actor=actor,
        action="payout.void",
        target=_target(claim),
        why=reason,
        data={"reference": payout.reference, "amount": str(payout.amount)},
    )
    return payout


def _names(earlier: list[Approval], user) -> list[str]:
    return [a.user.get_username() for a in earlier] + [user.get_username()]


def claim_deny(*, claim_id: int, user, reason_code: str, text: str) -> Claim:
    """Deny the claim with a coded reason and a sentence for the provider (both required)."""
    _require(user, Ability.DECIDE)
    text = (text or "").strip()
    if reason_code not in reasons.DENIAL_REASONS:
        raise Unprocessable("choose a denial reason code", code="reason")
    if not text:
        raise Unprocessable("a denial needs a sentence for the provider", code="reason_text")
    with transaction.atomic():
        claim = _locked(claim_id)
        _check_decidable(claim)
        _check_not_held_by_other(claim, user)
        why = f"CARC {reason_code} ({reasons.DENIAL_REASONS[reason_code]}): {text}"
        ClaimItem.objects.filter(claim=claim).exclude(adjudication=ITEM.DENIED).update(
            adjudication=ITEM.DENIED,
            eligible=Decimal(0),
            benefit=Decimal(0),
            reason_code=reason_code,
        )
        claim_transition(claim=claim, to=S.DENIED, actor=user, reason=why)
        _release(claim)
        audit_record(
            actor=user,
            action="claim.deny",
            target=_target(claim),
            why=why,
            data={"reason": reason_code},
        )
        return claim


# --- requests for information ---------------------------------------------------------------


def claim_request_info(*, claim_id: int, user, reason_code: str, question: str) -> InfoRequest:
    _require(user, Ability.DECIDE)
    question = (question or "").strip()
    if reason_code not in reasons.INFO_REASONS:
        raise Unprocessable("choose what you need from the provider", code="reason")
    if not question:
        raise Unprocessable("write the question the provider should answer", code="question")
    with transaction.atomic():
        claim = _locked(claim_id)
        _check_decidable(claim)
        _check_not_held_by_other(claim, user)
        _check_no_pending_approval(claim)
        # A request the claim left unanswered (a re-verification moved it on) is closed first.
        InfoRequest.objects.filter(claim=claim, answered_at__isnull=True).update(
            answered_at=timezone.now(),
            answer_text="(closed without an answer: the claim left information requested)",
        )
        request = InfoRequest.objects.create(
            claim=claim,
            reason_code=reason_code,
            question=question,
            requested_by=user,
            requested_at=timezone.now(),
        )
        claim_transition(
            claim=claim,
            to=S.INFO_REQUESTED,
            actor=user,
            reason=f"{reasons.INFO_REASONS[reason_code]}: {question}",
        )
        _release(claim)
        audit_record(
            actor=user,
            action="claim.request_info",
            target=_target(claim),
            why=question,
            data={"reason": reason_code},
        )
        return request


def attachment_validate(resource: object) -> dict:
    """A FHIR R4 DocumentReference or Binary, valid under fhir.resources' R4B models."""
    from fhir.resources.R4B import get_fhir_model_class

    if not isinstance(resource, dict):
        raise Unprocessable(
            "the attachment must be a FHIR resource (a JSON object)", code="attachment"
        )
    kind = resource.get("resourceType")
    if kind not in ATTACHMENT_TYPES:
        raise Unprocessable(
            f"the attachment must be a FHIR DocumentReference or Binary, not {kind!r}",
            code="attachment",
        )
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except Exception as exc:  # pydantic's ValidationError and friends: all mean "invalid"
        first = str(exc).splitlines()[:3]
        raise Unprocessable(
            f"the {kind} is not valid FHIR R4: {' '.join(first)}", code="invalid_fhir"
        ) from None
    # fhir.resources checks shapes, not code values or cardinality 1..*: these we act on.
    if kind == "DocumentReference":
        if resource.get("status") not in DOCUMENT_STATUSES:
            raise Unprocessable(
                f"DocumentReference.status must be one of {', '.join(DOCUMENT_STATUSES)}",
                code="invalid_fhir",
            )
        if not resource.get("content"):
            raise Unprocessable(
                "DocumentReference.content needs at least one attachment", code="invalid_fhir"
            )
    return resource


def info_answer(*, claim_id: int, user, attachment: object, text: str = "") -> InfoRequest:
    """The provider's answer: the open request is closed with the attachment and the claim goes
    back to the adjusters' queue (needs review)."""
    resource = attachment_validate(attachment)
    with transaction.atomic():
        claim = _locked(claim_id)
        link = getattr(user, "provider_link", None)
        if link is None or link.provider_id != claim.provider_id:
            raise NotFound("no such claim", code="unknown_claim")  # not theirs: say nothing
        request = InfoRequest.objects.filter(claim=claim, answered_at__isnull=True).first()
        if request is None or claim.status != S.INFO_REQUESTED:
            raise Conflict(
                "the insurer has no open request for information on this claim",
                code="no_open_request",
            )
        request.answered_at = timezone.now()
        request.answered_by = user
        request.answer_text = (text or "").strip()
        request.attachment = resource
        request.save(update_fields=["answered_at", "answered_by", "answer_text", "attachment"])
        try:
            claim_transition(
                claim=claim,
                to=S.NEEDS_REVIEW,
                actor=user,
                reason=f"provider answered: {resource['resourceType']}",
            )
        except ConcurrentTransition:
            raise Conflict("the claim changed meanwhile; try again", code="concurrent") from None
        audit_record(
            actor=user,
            action="claim.answer_info",
            target=_target(claim),
            why=request.answer_text,
            data={"attachment": resource["resourceType"], "request": request.pk},
        )
        return request


# --- bulk -----------------------------------------------------------------------------------


@dataclass
class BulkLine:
    claim_id: int
    public_id: str
    ok: bool
    message: str


def claims_bulk_approve(*, claim_ids: list[int], user) -> list[BulkLine]:
    """Approve each verified claim at or below the four-eyes amount, each in its own
    transaction; every other claim is left alone with the reason why."""
    _require(user, Ability.DECIDE)
    lines = []
    claims = {c.pk: c for c in Claim.objects.filter(pk__in=claim_ids)}
    for claim_id in dict.fromkeys(claim_ids):
        claim = claims.get(claim_id)
        if claim is None:
            lines.append(BulkLine(claim_id, "", False, "no such claim"))
            continue
        public_id = str(claim.public_id)
        if claim.status != S.VERIFIED:
            lines.append(
                BulkLine(
                    claim_id,
                    public_id,
                    False,
                    f"skipped: {claim.get_status_display()}, not verified",
                )
            )
            continue
        if approvals_needed(claim) > 1:
            lines.append(
                BulkLine(
                    claim_id,
                    public_id,
                    False,
                    f"skipped: above {four_eyes_above()} {claim.currency}, needs two adjusters",
                )
            )
            continue
        try:
            result = claim_approve(
                claim_id=claim_id,
                user=user,
                note="bulk approval",
                only_from=frozenset({S.VERIFIED}),
            )
        except DomainError as exc:
            lines.append(BulkLine(claim_id, public_id, False, f"skipped: {exc.detail}"))
        else:
            lines.append(BulkLine(claim_id, public_id, True, result.message))
    return lines
