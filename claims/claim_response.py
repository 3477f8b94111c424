"""The provider's answer as a FHIR R4 ClaimResponse, built from where the claim stands."""

from __future__ import annotations

from decimal import Decimal

from claims import money
from claims.models import Claim, ClaimCheck, ClaimItem
from claims.states import ClaimStatus

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
ADJUDICATION_ERROR = "http://terminology.hl7.org/CodeSystem/adjudication-error"
CLAIMPROOF_CHECKS = "https://claimproof.example/fhir/CodeSystem/verification-check"

QUEUED = {ClaimStatus.RECEIVED, ClaimStatus.VERIFYING}
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
    if claim.status in QUEUED:
        return "queued"
    if claim.status in ERROR:
        return "error"
    decided = {item.adjudication for item in items}
    if ClaimItem.Adjudication.DENIED in decided and decided - {ClaimItem.Adjudication.DENIED}:
        return "partial"
    return "complete"


def _disposition(claim: Claim, failed: list[ClaimCheck]) -> str:
    if claim.status in QUEUED:
        return "Received; verification against the consortium ledger is under way."
    if failed:
        return "Rejected: " + " ".join(check.sentence for check in failed)
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
        "disposition": _disposition(claim, failed),
    }
    if claim.status not in QUEUED:
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


def _item(item: ClaimItem, currency: str) -> dict:
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
        adjudication.append(
            {
                "category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]},
                "reason": {"coding": [{"code": item.reason_code}]},
            }
        )
    return {"itemSequence": item.sequence, "adjudication": adjudication}
