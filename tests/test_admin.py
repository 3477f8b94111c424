"""Operators manage members, keys and providers in the admin; history stays read-only."""

import pytest
from django.contrib.auth import get_user_model

from audit.models import AuditEntry
from tests.claims import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    user = get_user_model().objects.create_superuser("op", password="pw-operator-1")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/ledger/member/",
        "/admin/ledger/memberkey/",
        "/admin/ledger/leaf/",
        "/admin/ledger/checkpoint/",
        "/admin/ledger/cosignature/",
        "/admin/claims/provider/",
        "/admin/claims/providerkey/",
        "/admin/claims/claim/",
    ],
)
def test_every_admin_list_renders_for_an_operator(operator_client, url):
    f.make_provider()
    f.anchor_procedure(f.procedure())
    assert operator_client.get(url).status_code == 200


def test_history_cannot_be_added_or_deleted_in_the_admin(operator_client):
    f.ledger_node()
    assert operator_client.get("/admin/ledger/leaf/add/").status_code == 403
    assert operator_client.get("/admin/claims/claim/add/").status_code == 403


def test_a_member_key_that_is_not_a_note_key_is_refused_with_a_form_error(operator_client):
    f.ledger_node()
    from ledger.models import Member

    member = Member.objects.get(name="stmarys.example")
    response = operator_client.post(
        "/admin/ledger/memberkey/add/",
        {"member": member.pk, "purpose": "anchor", "verifier_key": "not-a-key"},
    )
    assert response.status_code == 200
    assert "not a Go note verifier key" in response.content.decode()


def test_a_provider_key_is_revoked_from_the_admin(operator_client):
    kit = f.make_provider()
    response = operator_client.post(
        "/admin/claims/providerkey/",
        {"action": "revoke_now", "_selected_action": [kit.key.pk]},
        follow=True,
    )
    assert response.status_code == 200
    kit.key.refresh_from_db()
    assert kit.key.revoked_at is not None
    entry = AuditEntry.objects.get(action="key.revoke")
    assert entry.actor_label == "op" and entry.target == f"key:{kit.key.kid}"


def test_a_member_key_revoked_in_the_admin_is_in_the_audit_trail(operator_client):
    f.ledger_node()
    from ledger.models import MemberKey

    key = MemberKey.objects.filter(purpose="anchor").first()
    response = operator_client.post(
        "/admin/ledger/memberkey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )
    assert response.status_code == 200 and "1 key(s) revoked." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    entry = AuditEntry.objects.get(action="member_key.revoke")
    assert entry.actor_label == "op" and entry.data["member"] == key.member.name


def test_member_keys_are_never_deleted_or_rewritten_in_the_admin(operator_client):
    f.ledger_node()
    from ledger.models import MemberKey

    key = MemberKey.objects.filter(purpose="cosign").first()
    assert operator_client.get(f"/admin/ledger/memberkey/{key.pk}/delete/").status_code == 403
    page = operator_client.get(f"/admin/ledger/memberkey/{key.pk}/change/").content.decode()
    assert 'name="verifier_key"' not in page  # shown, not editable
