"""POST /api/v1/claims: only cheap checks on the request path, a clear answer for every refusal,
idempotency, and nothing lost once 202 is sent."""

import base64
import json
import uuid
from pathlib import Path

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from claims import disclosure, jws
from claims.models import Claim, ClaimEvent
from tests.claims import factories as f

pytestmark = pytest.mark.django_db
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "fhir-examples" / "r4"


@pytest.fixture
def kit():
    return f.make_provider()


@pytest.fixture
def anchored():
    return [f.anchor_procedure(f.procedure()) for _ in range(2)]


def client_for(kit) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client


def post(kit, body: bytes, key: str | None = None, content_type="application/fhir+json"):
    return client_for(kit).generic(
        "POST",
        "/api/v1/claims",
        body,
        content_type=content_type,
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )


def test_a_signed_claim_is_accepted_with_202_and_its_url(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    response = post(kit, body, key="claim-1")
    assert response.status_code == 202
    data = response.json()
    assert response["Location"] == data["url"] == f"/api/v1/claims/{data['id']}"
    assert data["status"] == "received"
    assert data["total"] == "210.00" and data["currency"] == "USD"
    assert [i["submitted"] for i in data["items"]] == ["105.00", "105.00"]
    claim = Claim.objects.get(public_id=data["id"])
    assert bytes(claim.body) == body
    assert ClaimEvent.objects.filter(claim=claim, new_status="received").count() == 1
    assert client_for(kit).get(data["url"]).json()["status"] == "received"


def test_the_claim_is_committed_before_its_verification_is_queued(
    kit, anchored, django_capture_on_commit_callbacks
):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(kit, body)
        assert Claim.objects.filter(public_id=response.json()["id"]).exists()
    assert len(callbacks) == 1  # the enqueue waits for the commit


def test_the_same_key_and_body_answers_the_first_claim(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    first = post(kit, body, key="same")
    again = post(kit, body, key="same")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Claim.objects.count() == 1


def test_the_same_key_with_another_body_is_a_409(kit, anchored):
    post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored), key="k")
    other = f.signed_body(kit, f.claim_resource(anchored, unit_price="99.00"), anchored)
    response = post(kit, other, key="k")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"


def test_a_missing_idempotency_key_is_refused(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    response = client_for(kit).generic(
        "POST", "/api/v1/claims", body, content_type="application/fhir+json"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key"


def test_not_json_is_a_400(kit):
    response = post(kit, b'{"resourceType": "Bundle",')
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


def test_bad_fhir_is_a_422_operation_outcome_naming_the_element(kit, anchored):
    claim = f.claim_resource(anchored)
    claim["status"] = "bogus"
    response = post(kit, f.signed_body(kit, claim, anchored))
    assert response.status_code == 422
    assert response["Content-Type"] == "application/fhir+json"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("status" in " ".join(i.get("expression", [])) for i in outcome["issue"])


def test_an_unknown_resource_type_in_an_entry_is_a_422_not_a_500(kit, anchored):
    bundle = json.loads(f.signed_body(kit, f.claim_resource(anchored), anchored))
    bundle["entry"].append({"resource": {"resourceType": "Spaceship"}})
    response = post(kit, json.dumps(bundle).encode())
    assert response.status_code == 422


def test_an_unknown_kid_is_refused_at_intake(kit, anchored):
    stranger, _ = jws.generate_key()
    kit.private_jwk = stranger
    kit.key.kid = stranger["kid"]  # not saved: the registry does not know it
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_key"


def test_another_providers_key_is_refused_at_intake(kit, anchored):
    lab = f.make_provider(f.LAB)
    kit.private_jwk, kit.key = lab.private_jwk, lab.key
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_key"


def test_a_raw_jws_in_signature_data_is_refused_with_a_clear_error(kit, anchored):
    bundle = json.loads(f.signed_body(kit, f.claim_resource(anchored), anchored))
    raw = base64.b64decode(bundle["signature"]["data"]).decode()
    bundle["signature"]["data"] = raw
    response = post(kit, json.dumps(bundle).encode())
    assert response.status_code == 422
    assert "base64 of the JWS, not the JWS itself" in response.json()["detail"]


def test_an_oversize_body_is_a_413(kit, settings):
    settings.CLAIMS_MAX_BYTES = 100
    response = post(kit, b"{" + b" " * 200 + b"}")
    assert response.status_code == 413


def test_a_wrong_content_type_is_refused(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    response = post(kit, body, content_type="text/plain")
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported_media_type"


def test_without_a_token_the_api_answers_401():
    response = APIClient().post("/api/v1/claims", b"{}", content_type="application/fhir+json")
    assert response.status_code == 401


def test_a_user_bound_to_no_provider_is_refused(kit):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("adjuster-ish")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert client.get("/api/v1/claims").status_code == 403


def test_a_provider_sees_only_its_own_claims(kit, anchored):
    lab = f.make_provider(f.LAB)
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored))
    url = response.json()["url"]
    assert client_for(lab).get(url).status_code == 404
    assert client_for(lab).get(url + "/ClaimResponse").status_code == 404
    assert client_for(lab).get("/api/v1/claims").json() == []
    assert len(client_for(kit).get("/api/v1/claims").json()) == 1
    assert client_for(kit).get("/api/v1/claims/not-a-uuid").status_code == 404


def test_a_queued_claim_response_is_valid_fhir_with_outcome_queued(kit, anchored):
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored))
    answer = client_for(kit).get(response.json()["url"] + "/ClaimResponse")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/fhir+json"
    resource = ClaimResponse.model_validate_json(answer.content)
    assert resource.outcome == "queued"
    assert answer.json()["request"]["reference"] == f"Claim/{response.json()['id']}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("Claim-*.json")), ids=lambda p: p.stem)
def test_every_official_claim_example_is_accepted_once_wrapped_and_signed(kit, path):
    claim = json.loads(path.read_text())
    proc = f.procedure()
    a = f.anchor_procedure(proc, seal=False)
    claim["procedure"] = [{"sequence": 1, "procedureReference": {"reference": a.full_url}}]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:claim", "resource": claim}, a.entry()],
    }
    signed = disclosure.sign_bundle(
        bundle, kit.private_jwk, kit.kid, who=kit.organization, when="2026-11-20T10:00:00Z"
    )
    response = post(kit, json.dumps(signed).encode())
    assert response.status_code == 202, response.content


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_no_malformed_body_gets_a_500(kit, body):
    response = post(kit, body)
    assert response.status_code in (400, 409, 413, 422), response.content
