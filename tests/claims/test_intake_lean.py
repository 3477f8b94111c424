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
def test_a_submission_is_one_statement_once_the_token_was_read(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    with CaptureQueriesContext(connection) as first:
        post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="1.00"), anchored))
    assert "authtoken_token" in first.captured_queries[0]["sql"]  # read, then remembered
    with CaptureQueriesContext(connection) as queries:
        assert post(kit, body).status_code == 202
    # the claim with its rows, guarded by its token (still there, user active and bound); the
    # savepoint is the test's transaction's (claims.services._write): a request has none
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1, [sql[:60] for sql in statements]
    assert "authtoken_token" in statements[0]


def _remembered_then(kit, anchored, change) -> object:
    """POST once (the token is read and remembered), ``change()`` the account, POST again."""
    assert post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored)).status_code == 202
    change()
    return post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="7.00"), anchored))


def test_a_remembered_token_deleted_stores_nothing_and_is_a_401(kit, anchored):
    response = _remembered_then(kit, anchored, lambda: Token.objects.filter(key=kit.token).delete())
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."
    assert Claim.objects.count() == 1


def test_a_remembered_user_deactivated_stores_nothing_and_is_a_401(kit, anchored):
    def deactivate():
        type(kit.user).objects.filter(pk=kit.user.pk).update(is_active=False)

    response = _remembered_then(kit, anchored, deactivate)
    assert response.status_code == 401
    assert Claim.objects.count() == 1


def test_a_remembered_user_unbound_stores_nothing_and_is_a_403(kit, anchored):
    response = _remembered_then(
        kit, anchored, lambda: ProviderUser.objects.filter(user=kit.user).delete()
    )
    assert response.status_code == 403
    assert Claim.objects.count() == 1


def test_a_remembered_user_bound_elsewhere_stores_nothing_and_is_asked_to_resend(kit, anchored):
    lab = f.make_provider(f.LAB)
    response = _remembered_then(
        kit,
        anchored,
        lambda: ProviderUser.objects.filter(user=kit.user).update(provider=lab.provider),
    )
    assert response.status_code == 409 and response.json()["code"] == "account_changed"
    assert Claim.objects.count() == 1


def test_a_remembered_user_renamed_is_audited_under_the_new_name(kit, anchored):
    def rename():
        type(kit.user).objects.filter(pk=kit.user.pk).update(username="renamed-user")

    response = _remembered_then(kit, anchored, rename)
    assert response.status_code == 409  # nothing stored under the old name
    again = post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="8.00"), anchored))
    assert again.status_code == 202
    entry = AuditEntry.objects.get(target=f"claim:{again.json()['id']}")
    assert entry.actor_label == "renamed-user"


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


def test_a_remembered_token_deleted_sees_no_refusal_and_no_earlier_claim(kit, anchored):
    body = f.signed_body(kit, f.claim_resource(anchored), anchored)
    assert post(kit, body, key="first").status_code == 202  # read and remembered
    Token.objects.filter(key=kit.token).delete()
    assert post(kit, b"not json", key="other").status_code == 401  # not the 400
    replay = post(kit, body, key="first")  # not the earlier claim
    assert replay.status_code == 401 and "id" not in replay.json()


def test_a_remembered_provider_renamed_is_audited_under_its_new_name(kit, anchored):
    def rename():
        type(kit.provider).objects.filter(pk=kit.provider.pk).update(name="St Mary's renamed")

    assert _remembered_then(kit, anchored, rename).status_code == 409
    again = post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="9.00"), anchored))
    assert again.status_code == 202
    entry = AuditEntry.objects.get(target=f"claim:{again.json()['id']}")
    assert entry.data["provider"] == "St Mary's renamed"


# --- the lean path in front of the middleware (claims.api.IntakeMiddleware) ---------------------

_SAME_HEADERS_BUT = {"Location", "Content-Length"}


def _headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in _SAME_HEADERS_BUT}


def test_the_lean_202_is_the_full_stacks_202(kit, anchored, settings):
    assert post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored)).status_code == 202
    lean = post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="2.00"), anchored))
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "claims.api.IntakeMiddleware"]
    full = post(kit, f.signed_body(kit, f.claim_resource(anchored, unit_price="3.00"), anchored))
    assert lean.status_code == full.status_code == 202
    assert _headers(lean) == _headers(full)
    assert int(lean["Content-Length"]) == len(lean.content)
    claim = Claim.objects.prefetch_related("items", "events__actor").get(
        public_id=lean.json()["id"]
    )
    assert lean.json() == json.loads(json.dumps(ClaimOutput(claim).data))
    assert lean["Location"] == lean.json()["url"]


def test_the_lean_path_leaves_drfs_content_negotiation_as_it_was(kit, anchored):
    assert post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored)).status_code == 202
    body = f.signed_body(kit, f.claim_resource(anchored, unit_price="4.00"), anchored)
    refused = client_for(kit).generic(
        "POST",
        "/api/v1/claims",
        body,
        content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY="negotiated",
        HTTP_ACCEPT="application/fhir+json",  # DRF's renderers: JSON and the browsable API
    )
    assert refused.status_code == 406
    assert Claim.objects.count() == 1
    taken = client_for(kit).generic(
        "POST",
        "/api/v1/claims",
        body,
        content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY="negotiated",
        HTTP_ACCEPT="application/json",
    )
    assert taken.status_code == 202


def test_the_lean_path_is_off_behind_middleware_it_does_not_know(kit, anchored, settings):
    from claims.api import IntakeMiddleware

    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "some.other.Middleware"]
    assert not IntakeMiddleware(lambda request: None).enabled


def _refusals(kit, anchored) -> list[tuple[str, bytes, dict]]:
    good = f.signed_body(kit, f.claim_resource(anchored, unit_price="5.00"), anchored)
    bad_fhir = f.claim_resource(anchored)
    bad_fhir["status"] = "bogus"
    return [
        ("not json", b"not json", {}),
        ("bad fhir", f.signed_body(kit, bad_fhir, anchored), {}),
        ("no key", good, {"HTTP_IDEMPOTENCY_KEY": " "}),
        ("media type", good, {"content_type": "text/plain"}),
        ("too large", b"{" + b" " * 60_000 + b"}", {}),
        ("key reused", good, {"HTTP_IDEMPOTENCY_KEY": "first"}),
        ("query", good, {"QUERY_STRING": "format=xml"}),
    ]


def _answers(kit, anchored, settings) -> list[tuple[int, str, bytes]]:
    out = []
    for name, body, extra in _refusals(kit, anchored):
        extra = dict(extra)
        response = client_for(kit).generic(
            "POST",
            "/api/v1/claims",
            body,
            content_type=extra.pop("content_type", "application/fhir+json"),
            HTTP_IDEMPOTENCY_KEY=extra.pop("HTTP_IDEMPOTENCY_KEY", f"{name}-key"),
            **extra,
        )
        out.append((response.status_code, response["Content-Type"], response.content))
    return out


def test_refusals_from_a_remembered_token_answer_as_the_full_stack_does(kit, anchored, settings):
    settings.CLAIMS_MAX_BYTES = 50_000
    first = f.signed_body(kit, f.claim_resource(anchored), anchored)
    assert post(kit, first, key="first").status_code == 202  # the token is remembered now
    lean = _answers(kit, anchored, settings)
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "claims.api.IntakeMiddleware"]
    full = _answers(kit, anchored, settings)
    assert [status for status, _, _ in lean] == [400, 422, 422, 422, 413, 409, 404]
    assert lean == full
    assert Claim.objects.count() == 1
