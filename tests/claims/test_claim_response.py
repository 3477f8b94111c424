"""What the provider reads back: status, checks and a FHIR ClaimResponse with item adjudication;
and the claim's history."""

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from rest_framework.test import APIClient

from tests.claims import factories as f

pytestmark = pytest.mark.django_db


def client_for(kit) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client


def _response(kit, claim) -> dict:
    answer = client_for(kit).get(f"/api/v1/claims/{claim.public_id}/ClaimResponse")
    assert answer.status_code == 200
    ClaimResponse.model_validate_json(answer.content)  # valid FHIR R4 (R4B model)
    return answer.json()


def test_a_verified_claim_is_queued_for_a_decision_and_promises_no_benefit_yet():
    kit = f.make_provider()
    claim, _ = f.claim_for(kit)
    f.verified(claim)
    resource = _response(kit, claim)
    assert resource["outcome"] == "queued"
    assert resource["disposition"].startswith("Verified against the consortium ledger")
    item = resource["item"][0]
    categories = {
        a["category"]["coding"][0]["code"]: a["amount"]["value"] for a in item["adjudication"]
    }
    assert categories == {"submitted": 105.0}
    assert [t["category"]["coding"][0]["code"] for t in resource["total"]] == ["submitted"]
    assert (
        '"value": 105.00'
        in client_for(kit).get(f"/api/v1/claims/{claim.public_id}/ClaimResponse").content.decode()
    )  # decimals exactly as stored

    from review import services
    from review.roles import Role
    from tests.review.factories import user_with

    services.claim_approve(claim_id=claim.pk, user=user_with(Role.ADJUSTER))
    resource = _response(kit, claim)
    assert resource["outcome"] == "complete"
    item = resource["item"][0]
    categories = {
        a["category"]["coding"][0]["code"]: a["amount"]["value"] for a in item["adjudication"]
    }
    assert categories["submitted"] == 105.0 and categories["benefit"] == 105.0


def test_a_rejected_claim_answers_error_with_the_failed_check():
    kit = f.make_provider()
    unanchored = f.Anchored(f.procedure(), b"\1" * 32, 999_999, b"\2" * 32)
    claim, _ = f.claim_for(kit, [unanchored])
    f.verified(claim)
    resource = _response(kit, claim)
    assert resource["outcome"] == "error"
    assert resource["error"][0]["code"]["coding"][0]["code"] == "procedure"
    assert "Rejected" in resource["disposition"]


def test_the_api_shows_checks_and_history():
    kit = f.make_provider()
    claim, _ = f.claim_for(kit)
    f.verified(claim)
    data = client_for(kit).get(f"/api/v1/claims/{claim.public_id}").json()
    assert data["status"] == "verified"
    assert {c["name"].split(":")[0] for c in data["checks"]} >= {
        "signature",
        "fhir",
        "procedure",
        "binding",
        "double_billing",
    }
    assert all(c["sentence"] for c in data["checks"])
    assert [e["new_status"] for e in data["history"]] == ["received", "verifying", "verified"]


def test_a_coverage_that_has_ended_by_the_date_of_service_rejects_the_claim():
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure())]
    coverage = {
        "resourceType": "Coverage",
        "id": "c1",
        "status": "active",
        "beneficiary": {"reference": "Patient/p1"},
        "payor": [{"reference": "Organization/acme-insurance.example"}],
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    }
    body = f.signed_body(kit, f.claim_resource(anchored), anchored, context=[coverage])
    claim = f.verified(f.submit(kit, body))
    assert claim.status == "rejected"
    assert "Coverage" in f.checks(claim)["binding"].sentence


def test_item_adjudication_carries_the_adjusters_carc_reasons():
    from decimal import Decimal

    from review import reasons, services
    from review.roles import Role
    from tests.review.factories import decidable_claim, user_with

    kit = f.make_provider()
    claim = decidable_claim(kit, procedures=2)
    adjuster = user_with(Role.ADJUSTER)
    services.item_decide(
        claim_id=claim.pk,
        user=adjuster,
        sequence=1,
        action="adjust",
        amount=Decimal("80.00"),
        reason_code="45",
    )
    services.item_decide(
        claim_id=claim.pk, user=adjuster, sequence=2, action="deny", reason_code="96"
    )
    services.claim_approve(claim_id=claim.pk, user=adjuster)
    resource = _response(kit, claim)
    assert resource["outcome"] == "partial"
    items = {i["itemSequence"]: i["adjudication"] for i in resource["item"]}

    def benefit(seq):
        return next(a for a in items[seq] if a["category"]["coding"][0]["code"] == "benefit")

    assert benefit(1)["amount"]["value"] == 80.0
    assert benefit(1)["reason"]["coding"][0] == {
        "system": reasons.CARC_SYSTEM,
        "code": "45",
        "display": reasons.DENIAL_REASONS["45"],
    }
    assert benefit(2)["amount"]["value"] == 0 and benefit(2)["reason"]["coding"][0]["code"] == "96"
    totals = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in resource["total"]}
    assert totals == {"submitted": 210.0, "benefit": 80.0}


def test_a_denied_claim_says_why_in_a_process_note():
    from review import services
    from review.roles import Role
    from tests.review.factories import decidable_claim, user_with

    kit = f.make_provider()
    claim = decidable_claim(kit)
    services.claim_deny(
        claim_id=claim.pk,
        user=user_with(Role.ADJUSTER),
        reason_code="50",
        text="The records do not show medical necessity.",
    )
    resource = _response(kit, claim)
    assert resource["outcome"] == "complete"
    assert resource["disposition"].startswith("Denied: CARC 50")
    assert "medical necessity" in resource["processNote"][0]["text"]
    reason = resource["item"][0]["adjudication"][-1]["reason"]["coding"][0]
    assert reason["code"] == "50"


def test_a_rejected_items_reason_uses_claimproofs_code_system():
    from claims.claim_response import CLAIMPROOF_REASONS

    kit = f.make_provider()
    unanchored = f.Anchored(f.procedure(), b"\1" * 32, 999_999, b"\2" * 32)
    claim, _ = f.claim_for(kit, [unanchored])
    f.verified(claim)
    resource = _response(kit, claim)
    reasons = [a["reason"] for a in resource["item"][0]["adjudication"] if "reason" in a]
    assert reasons[0]["coding"][0]["system"] == CLAIMPROOF_REASONS
