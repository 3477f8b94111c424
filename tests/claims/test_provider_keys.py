"""Providers register, list and revoke their signing keys; nobody touches another's."""

import pytest
from rest_framework.test import APIClient

from claims import jws
from claims.models import ProviderKey
from tests.claims import factories as f

pytestmark = pytest.mark.django_db


def client_for(kit) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {kit.token}")
    return client


def keys_url(kit) -> str:
    return f"/api/v1/providers/{kit.provider.pk}/keys"


def test_a_provider_registers_a_public_jwk_and_its_kid_is_the_thumbprint():
    kit = f.make_provider()
    _, public = jws.generate_key()
    del public["kid"]
    response = client_for(kit).post(keys_url(kit), {"public_jwk": public}, format="json")
    assert response.status_code == 201
    assert response.json()["kid"] == jws.thumbprint(public)
    again = client_for(kit).post(keys_url(kit), {"public_jwk": public}, format="json")
    assert again.status_code == 200 and again.json()["kid"] == response.json()["kid"]
    assert ProviderKey.objects.filter(provider=kit.provider).count() == 2


def test_a_private_key_or_garbage_is_refused_as_a_jwk():
    kit = f.make_provider()
    private, _ = jws.generate_key()
    for bad in (private, {"kty": "RSA"}, "not a jwk", {"kty": "OKP", "crv": "Ed25519", "x": "AA"}):
        response = client_for(kit).post(keys_url(kit), {"public_jwk": bad}, format="json")
        assert response.status_code == 422, bad
        assert response.json()["code"] == "bad_jwk"


def test_an_empty_validity_window_is_refused():
    kit = f.make_provider()
    _, public = jws.generate_key()
    response = client_for(kit).post(
        keys_url(kit),
        {
            "public_jwk": public,
            "not_before": "2026-02-01T00:00:00Z",
            "not_after": "2026-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["code"] == "bad_window"


def test_revoking_needs_a_reason_and_records_when():
    kit = f.make_provider()
    url = f"{keys_url(kit)}/{kit.kid}/revoke"
    assert client_for(kit).post(url, {}, format="json").status_code == 400
    response = client_for(kit).post(url, {"reason": "laptop stolen"}, format="json")
    assert response.status_code == 200
    assert response.json()["revoked_at"] and response.json()["revocation_reason"] == "laptop stolen"
    assert client_for(kit).post(url, {"reason": "again"}, format="json").status_code == 409


def test_nobody_lists_or_revokes_another_providers_keys():
    kit, lab = f.make_provider(), f.make_provider(f.LAB)
    assert client_for(lab).get(keys_url(kit)).status_code == 404
    url = f"{keys_url(kit)}/{kit.kid}/revoke"
    assert client_for(lab).post(url, {"reason": "x"}, format="json").status_code == 404
    kit.key.refresh_from_db()
    assert kit.key.revoked_at is None
    assert client_for(kit).get(keys_url(kit)).json()[0]["kid"] == kit.kid
