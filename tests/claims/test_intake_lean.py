"""The lean intake path answers what the full one did: the 202 body is the claim as GET shows
it, the token's one-query authentication refuses what DRF's refused, at once, and a reused
Idempotency-Key answers the same whatever the new body holds."""

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEntry
from claims.api import ClaimOutput
from claims.models import Claim, ClaimEvent, ClaimItem, ProviderUser
from tests.claims import factories as f

pytestmark = pytest.mark.django_db


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


def post(kit, body: bytes, key: str | None = None):
    return client_for(kit).generic(
        "POST",
        "/api/v1/claims",
        body,
        content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )


def test_the_202_body_is_the_claim_as_the_serializer_writes_it(kit, anchored):
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored))
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    claim = Claim.objects.prefetch_related("items", "events__actor").get(
        public_id=response.json()["id"]
    )
    assert response.json() == json.loads(json.dumps(ClaimOutput(claim).data))
    assert client_for(kit).get(response["Location"]).json() == response.json()


def test_one_submission_writes_claim_items_event_and_audit_entry_together(kit, anchored):
    response = post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored), key="k1")
    claim = Claim.objects.get(public_id=response.json()["id"])
    assert claim.idempotency_key == "k1" and claim.kid == kit.kid
    assert [i.sequence for i in ClaimItem.objects.filter(claim=claim).order_by("sequence")] == [
        1,
        2,
    ]
    event = ClaimEvent.objects.get(claim=claim)
    assert (event.new_status, event.reason, event.actor_id) == (
        "received",
        "submitted",
        kit.user.pk,
    )
    assert event.snapshot["idempotency_key"] == "k1" and event.snapshot["kid"] == kit.kid
    entry = AuditEntry.objects.get(target=f"claim:{claim.public_id}")
    assert entry.action == "claim.submit" and entry.actor_id == kit.user.pk
    assert entry.data["kid"] == kit.kid


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement on PostgreSQL")
def test_a_submission_is_two_statements_on_postgresql(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="1.00"), anchored))
    with CaptureQueriesContext(connection) as queries:
        assert post(kit, body).status_code == 202
    # the token with its user and provider, then the claim with its rows; the signing key's
    # owner was read by the first submission
    assert len(queries.captured_queries) == 2, [q["sql"][:60] for q in queries.captured_queries]


def test_a_taken_key_writes_nothing_more(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    first = post(kit, body, key="same")
    again = post(kit, body, key="same")
    assert again.status_code == 202 and again.json() == first.json()
    assert Claim.objects.count() == ClaimEvent.objects.count() == 1
    assert ClaimItem.objects.count() == 2
    assert AuditEntry.objects.filter(action="claim.submit").count() == 1


def test_a_reused_key_with_an_invalid_body_is_still_a_409(kit, anchored):
    post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored), key="k")
    assert post(kit, b"not json", key="k").status_code == 409
    assert post(kit, b'{"resourceType": "Patient"}', key="k").status_code == 409
    assert post(kit, b"not json", key="fresh").status_code == 400


def test_a_deleted_token_is_refused_at_once(kit, anchored):
    client = client_for(kit)
    assert client.get("/api/v1/claims").status_code == 200
    Token.objects.filter(key=kit.token).delete()
    response = client.get("/api/v1/claims")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


def test_a_deactivated_user_is_refused_at_once(kit):
    client = client_for(kit)
    assert client.get("/api/v1/claims").status_code == 200
    type(kit.user).objects.filter(pk=kit.user.pk).update(is_active=False)
    response = client.get("/api/v1/claims")
    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


def test_an_unbound_user_loses_access_at_once(kit, anchored):
    client = client_for(kit)
    assert client.get("/api/v1/claims").status_code == 200
    ProviderUser.objects.filter(user=kit.user).delete()
    assert client.get("/api/v1/claims").status_code == 403
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    assert post(kit, body).status_code == 403
    assert Claim.objects.count() == 0


def test_a_malformed_token_header_is_refused_as_drf_does():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token two parts")
    response = client.get("/api/v1/claims")
    assert response.status_code == 401
    assert "Token string should not contain spaces" in response.json()["detail"]
