"""The provider's answer as a FHIR R4 ClaimResponse, built from where the claim stands.

Item adjudication carries the reason of an adjusted or denied line on its ``benefit`` entry: X12
CARC codes (``review.reasons``) under their system, verification's own codes under ours. An open
request for information keeps ``outcome`` at ``queued`` and puts the question in a
``processNote``; a denial's sentence is a ``processNote`` too.
"""

from __future__ import annotations

from decimal import Decimal

from claims import money
from claims.models import Claim, ClaimCheck, ClaimEvent, ClaimItem
from claims.states import ClaimStatus
from review import reasons

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
ADJUDICATION_ERROR = "http://terminology.hl7.org/CodeSystem/adjudication-error"
CLAIMPROOF_CHECKS = "https://claimproof.example/fhir/CodeSystem/verification-check"
CLAIMPROOF_REASONS = "https://claimproof.example/fhir/CodeSystem/adjudication-reason"

QUEUED = {ClaimStatus.RECEIVED, ClaimStatus.VERIFYING}
# Verified but not decided yet: nothing is promised to the provider until an adjuster decides.
AWAITING_DECISION = {ClaimStatus.VERIFIED, ClaimStatus.NEEDS_REVIEW, ClaimStatus.INFO_REQUESTED}
ERROR = {ClaimStatus.REJECTED}


def _claim_json(claim: Claim) -> dict:
    bundle = money.loads(bytes(claim.body))
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Claim":
            return resource
    return {}


def _money(value: Decimal | None, currency: str) -> dict | None:
    if value is None:
        return None
    return {"value": value, "currency": currency or "USD"}


def _adjudication(code: str, amount: dict | None) -> dict | None:
    if amount is None:
        return None
    return {"category": {"coding": [{"system": ADJUDICATION, "code": code}]}, "amount": amount}


def _outcome(claim: Claim, items: list[ClaimItem]) -> str:
    if claim.status in QUEUED or claim.status in AWAITING_DECISION:
        return "queued"
    if claim.status in ERROR:
        return "error"
    decided = {item.adjudication for item in items}
    if ClaimItem.Adjudication.DENIED in decided and decided - {ClaimItem.Adjudication.DENIED}:
        return "partial"
    return "complete"


def _disposition(claim: Claim, failed: list[ClaimCheck], open_request, denial: str) -> str:
    if claim.status in QUEUED:
        return "Received; verification against the consortium ledger is under way."
    if failed:
        return "Rejected: " + " ".join(check.sentence for check in failed)
    if claim.status == ClaimStatus.INFO_REQUESTED and open_request is not None:
        return (
            f"The insurer requests more information: {open_request.question} "
            "Answer with POST /api/v1/claims/{id}/info-requests/answer.".replace(
                "{id}", str(claim.public_id)
            )
        )
    if claim.status == ClaimStatus.DENIED and denial:
        return f"Denied: {denial}"
    return {
        ClaimStatus.VERIFIED: "Verified against the consortium ledger; awaiting adjudication.",
        ClaimStatus.NEEDS_REVIEW: "Verified with findings; an adjuster reviews it.",
        ClaimStatus.INFO_REQUESTED: "The insurer requests more information.",
        ClaimStatus.APPROVED: "Approved for payment.",
        ClaimStatus.DENIED: "Denied.",
        ClaimStatus.PAID: "Paid.",
        ClaimStatus.SUPERSEDED: "Superseded by a correction.",
        ClaimStatus.VOIDED: "Voided.",
    }.get(claim.status, claim.status)


def claim_response(claim: Claim) -> dict:
    """A ClaimResponse valid under fhir.resources' R4B model (tests check it)."""
    source = _claim_json(claim)
    items = list(claim.items.all())
    run = claim.verification_runs
    failed = (
        [c for c in claim.checks.filter(run=run, outcome=ClaimCheck.Outcome.FAIL)] if run else []
    )
    open_request = _open_request(claim)
    denial = _denial(claim)
    created = claim.updated_at.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    response: dict = {
        "resourceType": "ClaimResponse",
        "id": str(claim.public_id),
        "status": "active",
        "type": source.get("type") or {"coding": [{"code": "professional"}]},
        "use": claim.use or "claim",
        "patient": source.get("patient") or {"display": "unknown"},
        "created": created,
        "insurer": source.get("insurer") or {"display": "insurer"},
        "requestor": source.get("provider"),
        "request": {"reference": f"Claim/{claim.public_id}"},
        "outcome": _outcome(claim, items),
        "disposition": _disposition(claim, failed, open_request, denial),
    }
    notes = []
    if open_request is not None:
        notes.append(
            f"Request for information ({open_request.reason_label}): {open_request.question}"
        )
    if denial:
        notes.append(f"Denied: {denial}")
    if notes:
        response["processNote"] = [
            {"number": n, "type": "display", "text": text} for n, text in enumerate(notes, start=1)
        ]
    if claim.status in AWAITING_DECISION:  # what was billed; no benefit before a decision
        response["item"] = [_item(item, claim.currency, decided=False) for item in items]
        submitted = sum((i.submitted for i in items), Decimal("0.00"))
        response["total"] = [_adjudication("submitted", _money(submitted, claim.currency))]
    elif claim.status not in QUEUED:
        response["item"] = [_item(item, claim.currency) for item in items]
        submitted = sum((i.submitted for i in items), Decimal("0.00"))
        benefit = sum((i.benefit or Decimal("0.00") for i in items), Decimal("0.00"))
        response["total"] = [
            t
            for t in (
                _adjudication("submitted", _money(submitted, claim.currency)),
                _adjudication("benefit", _money(benefit, claim.currency)),
            )
            if t
        ]
    if failed:
        response["error"] = [
            {
                "code": {
                    "coding": [{"system": CLAIMPROOF_CHECKS, "code": check.name.split(":")[0]}],
                    "text": check.sentence,
                }
            }
            for check in failed
        ]
    return {k: v for k, v in response.items() if v is not None}


def _open_request(claim: Claim):
    """The unanswered request for information, with ``reason_label`` set; None if there is none."""
    from review.models import InfoRequest  # review depends on claims, not the other way round

    request = InfoRequest.objects.filter(claim=claim, answered_at__isnull=True).first()
    if request is not None:
        request.reason_label = reasons.INFO_REASONS.get(request.reason_code, request.reason_code)
    return request


def _denial(claim: Claim) -> str:
    """Why an adjuster denied the claim (the reason of its move to denied)."""
    if claim.status != ClaimStatus.DENIED:
        return ""
    event = (
        ClaimEvent.objects.filter(claim=claim, new_status=ClaimStatus.DENIED)
        .order_by("-at", "-id")
        .first()
    )
    return event.reason if event and event.reason else ""


def _reason(code: str) -> dict:
    """An adjudication reason: an X12 CARC code, or one of verification's own codes."""
    if code in reasons.DENIAL_REASONS:
        return {
            "coding": [
                {
                    "system": reasons.CARC_SYSTEM,
                    "code": code,
                    "display": reasons.DENIAL_REASONS[code],
                }
            ]
        }
    return {"coding": [{"system": CLAIMPROOF_REASONS, "code": code}]}


def _item(item: ClaimItem, currency: str, *, decided: bool = True) -> dict:
    if not decided:
        submitted = _adjudication("submitted", _money(item.submitted, currency))
        return {"itemSequence": item.sequence, "adjudication": [submitted]}
    adjudication = [
        a
        for a in (
            _adjudication("submitted", _money(item.submitted, currency)),
            _adjudication("eligible", _money(item.eligible, currency)),
            _adjudication("benefit", _money(item.benefit, currency)),
        )
        if a
    ]
    if item.reason_code:
        benefit = next(
            (a for a in adjudication if a["category"]["coding"][0]["code"] == "benefit"), None
        )
        if benefit is None:
            benefit = {"category": {"coding": [{"system": ADJUDICATION, "code": "benefit"}]}}
            adjudication.append(benefit)
        benefit["reason"] = _reason(item.reason_code)
    return {"itemSequence": item.sequence, "adjudication": adjudication}
