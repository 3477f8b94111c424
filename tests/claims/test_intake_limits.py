"""Values FHIR allows but the database cannot hold are the provider's 422, never a 500, and
store nothing: a code longer than its column, an amount beyond it, a NUL character."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from claims.models import Claim
from tests.claims import factories as f

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _post(kit, body: bytes, key: str | None = None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client.generic(
        "POST", "/api/v1/claims", body, content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )  # fmt: skip


def _code(resource, value):
    resource["item"][0]["productOrService"]["coding"][0]["code"] = value


def _amounts(resource, value):
    for money in (resource["item"][0]["net"], resource["item"][0]["unitPrice"], resource["total"]):
        money["value"] = value


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda r: _code(r, "9" * 150), "value too long"),
        (lambda r: _amounts(r, 1e15), "numeric field overflow"),
        (lambda r: _code(r, "a\u0000b"), "NUL"),
    ],
)
def test_a_value_the_database_cannot_hold_is_a_422_and_stores_nothing(change, said):
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure())]
    resource = f.claim_resource(anchored)
    change(resource)
    body = f.signed_body(kit, resource, anchored)
    for _ in range(2):  # the second time through the remembered token
        answer = _post(kit, body)
        assert answer.status_code == 422, answer.content
        assert answer.json()["code"] == "value_out_of_range" and said in answer.json()["detail"]
    assert not Claim.objects.filter(provider=kit.provider).exists()


def test_a_nul_in_the_idempotency_key_is_a_422():
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure())]
    answer = _post(kit, f.signed_body(kit, f.claim_resource(anchored), anchored), key="a\x00b")
    assert answer.status_code == 422 and answer.json()["code"] == "value_out_of_range"
    assert not Claim.objects.filter(provider=kit.provider).exists()
