"""The provider's side of a request for information, through the API with its token."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from rest_framework.test import APIClient

from claims.models import Claim
from claims.states import ClaimStatus
from review import services
from review.models import InfoRequest
from review.roles import Role
from tests.claims import factories as f
from tests.review.factories import decidable_claim, user_with

pytestmark = pytest.mark.django_db

DOCUMENT = {
    "resourceType": "DocumentReference",
    "status": "current",
    "description": "Operative report",
    "content": [
        {"attachment": {"contentType": "application/pdf", "title": "op.pdf", "data": "JVBERi0="}}
    ],
}


def client_for(kit) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client


@pytest.fixture
def waiting():
    """A provider's verified claim on which an adjuster asked for the operative report."""
    kit = f.make_provider()
    claim = decidable_claim(kit)
    services.claim_request_info(
        claim_id=claim.pk,
        user=user_with(Role.ADJUSTER),
        reason_code="operative-report",
        question="Please send the operative report.",
    )
    return kit, claim


def _answer(client: APIClient, claim: Claim, body: object, **extra):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        f"/api/v1/claims/{claim.public_id}/info-requests/answer",
        data=data,
        content_type=extra.pop("content_type", "application/json"),
        **extra,
    )


def test_the_provider_sees_the_request_and_answers_it(waiting):
    kit, claim = waiting
    client = client_for(kit)
    listed = client.get(f"/api/v1/claims/{claim.public_id}/info-requests")
    assert listed.status_code == 200
    [request] = listed.json()
    assert request["question"] == "Please send the operative report."
    assert request["reason_code"] == "operative-report"
    assert request["reason"] == "Operative or procedure report"
    assert request["answered"] is False and request["requested_at"]

    answer = _answer(client, claim, {"attachment": DOCUMENT, "text": "Attached, page 2."})
    assert answer.status_code == 200, answer.content
    assert answer.json()["answered"] is True
    assert answer.json()["attachment_type"] == "DocumentReference"
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.NEEDS_REVIEW
    stored = InfoRequest.objects.get(claim=claim)
    assert stored.answer_text == "Attached, page 2." and stored.answered_by == kit.user
    assert stored.attachment == DOCUMENT

    [again] = client.get(f"/api/v1/claims/{claim.public_id}/info-requests").json()
    assert again["answered"] is True
    second = _answer(client, claim, {"attachment": DOCUMENT})
    assert second.status_code == 409 and second.json()["code"] == "no_open_request"


def test_bad_answers_are_refused_with_a_reason_and_change_nothing(waiting, settings):
    kit, claim = waiting
    client = client_for(kit)
    cases = [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        ({"text": "no attachment"}, 422, "attachment"),
        ({"attachment": {"resourceType": "Patient"}}, 422, "attachment"),
        ({"attachment": {**DOCUMENT, "status": "nope"}}, 422, "invalid_fhir"),
        ({"attachment": {**DOCUMENT, "bogus": 1}}, 422, "invalid_fhir"),
        ({"attachment": DOCUMENT, "text": 5}, 422, "text"),
    ]
    for body, status, code in cases:
        answer = _answer(client, claim, body)
        assert answer.status_code == status, (body, answer.content)
        assert answer.json()["code"] == code
        assert answer.json()["detail"]
    wrong_type = _answer(client, claim, {"attachment": DOCUMENT}, content_type="text/plain")
    assert wrong_type.status_code == 422
    settings.CLAIMS_MAX_BYTES = 100
    big = _answer(client, claim, {"attachment": DOCUMENT, "text": "x" * 200})
    assert big.status_code == 413 and big.json()["code"] == "too_large"
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.INFO_REQUESTED
    assert InfoRequest.objects.get(claim=claim).answered_at is None


def test_a_binary_answers_too(waiting):
    kit, claim = waiting
    binary = {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="}
    answer = _answer(client_for(kit), claim, {"attachment": binary})
    assert answer.status_code == 200 and answer.json()["attachment_type"] == "Binary"


def test_another_providers_claim_is_not_found(waiting):
    _, claim = waiting
    other = f.make_provider(f.LAB)
    client = client_for(other)
    assert client.get(f"/api/v1/claims/{claim.public_id}/info-requests").status_code == 404
    answer = _answer(client, claim, {"attachment": DOCUMENT})
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_claim"
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.INFO_REQUESTED


def test_without_a_token_nothing_is_shown(waiting):
    _, claim = waiting
    assert APIClient().get(f"/api/v1/claims/{claim.public_id}/info-requests").status_code in (
        401,
        403,
    )


def test_no_open_request_is_a_conflict():
    kit = f.make_provider()
    claim = decidable_claim(kit)
    answer = _answer(client_for(kit), claim, {"attachment": DOCUMENT})
    assert answer.status_code == 409 and answer.json()["code"] == "no_open_request"
    assert client_for(kit).get(f"/api/v1/claims/{claim.public_id}/info-requests").json() == []


def test_the_claim_response_tells_the_provider_about_the_open_request(waiting):
    kit, claim = waiting
    raw = client_for(kit).get(f"/api/v1/claims/{claim.public_id}/ClaimResponse").content
    ClaimResponse.model_validate_json(raw)
    resource = json.loads(raw)
    assert resource["outcome"] == "queued"
    assert "Please send the operative report." in resource["processNote"][0]["text"]
    assert "info-requests/answer" in resource["disposition"]
    _answer(client_for(kit), claim, {"attachment": DOCUMENT})
    resource = client_for(kit).get(f"/api/v1/claims/{claim.public_id}/ClaimResponse").json()
    assert "processNote" not in resource


def test_an_answer_sent_as_json_in_any_case_is_taken_as_a_claim_is(waiting):
    """Media types compare case-insensitively (RFC 9110 8.3.1), as on POST /api/v1/claims."""
    kit, claim = waiting
    answer = _answer(
        client_for(kit), claim, {"attachment": DOCUMENT}, content_type="Application/JSON"
    )
    assert answer.status_code == 200, answer.content
