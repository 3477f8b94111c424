"""The auditor's page through Django's test client: who may see it, browsing, filters, keyset
pages, and the verify action."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEntry, ChainAnchor
from ledger import services
from review.roles import Role
from tests.audit import helpers as h
from tests.review.factories import PASSWORD, user_with

pytestmark = pytest.mark.django_db
URL, VERIFY = "/audit/", "/audit/verify"


def client_for(*roles: Role) -> Client:
    client = Client(raise_request_exception=False)
    user = user_with(*roles)
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_the_url_names():
    assert reverse("audit:trail") == URL and reverse("audit:verify") == VERIFY


@pytest.mark.parametrize(
    ("roles", "status"),
    [
        ((Role.AUDITOR,), 200),
        ((Role.OPERATOR,), 200),
        ((Role.ADJUSTER,), 403),
        ((Role.SENIOR_ADJUSTER,), 403),
        ((), 403),
    ],
)
def test_who_may_read_and_verify_the_trail(roles, status):
    h.node()
    client = client_for(*roles)
    assert client.get(URL).status_code == status
    assert client.post(VERIFY, HTTP_HX_REQUEST="true").status_code == status


def test_anonymous_users_are_sent_to_log_in():
    for response in (Client().get(URL), Client().post(VERIFY)):
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_the_page_is_read_only():
    h.node()
    client = client_for(Role.AUDITOR)
    assert client.post(URL).status_code == 405
    assert client.get(VERIFY).status_code == 405


def test_entries_newest_first_with_their_chain_status():
    h.two_anchor_trail()
    h.record(1, why="written after the seal")
    client = client_for(Role.AUDITOR)
    page = client.get(URL).content.decode()
    assert 'aria-current="page">Audit trail' in page  # the nav marks the page
    assert page.index("written after the seal") < page.index("reason 1")  # newest first
    assert page.count('data-testid="status">PENDING') == 1
    assert page.count('data-testid="status">ANCHORED</span>') == 8
    leaves = dict(ChainAnchor.objects.values_list("seq", "leaf_index"))
    assert f'href="/ledger/?leaf={leaves[8]}" data-testid="leaf-link">leaf {leaves[8]}' in page
    assert f'href="/ledger/?leaf={leaves[6]}" data-testid="leaf-link">leaf {leaves[6]}' in page
    head = bytes(AuditEntry.objects.get(seq=8).hash).hex()
    assert head in page


def test_keyset_pages_cover_every_entry_once():
    h.node()
    h.record(120)
    services.ledger_seal()
    client = client_for(Role.AUDITOR)
    seen, url = [], URL + "?action=claim.approve"
    while url:
        response = client.get(url)
        rows = response.context["page"].rows
        seen += [r.entry.seq for r in rows]
        url = response.context["next_url"]
        if url:
            assert "action=claim.approve" in url
            url = URL + url
    assert seen == list(range(120, 0, -1))


def test_filters_by_action_actor_target_and_date():
    from django.contrib.auth import get_user_model

    h.node()
    alice = get_user_model().objects.create_user("alice")
    h.record(2, actor=alice, action="claim.deny", target="claim:abc")
    h.record(3, action="key.revoke", target="key:k1")
    client = client_for(Role.AUDITOR)

    def seqs(query: str) -> int:
        return len(client.get(URL + query).context["page"].rows)

    # the auditor's own login is not an audit entry: five entries in all
    assert seqs("") == 5
    assert seqs("?action=claim.deny") == 2
    assert seqs("?action=key") == 3  # a prefix: every key.* action
    assert seqs("?actor=alice") == 2
    assert seqs("?actor=system") == 3
    assert seqs("?target=claim:abc") == 2
    assert seqs("?target=abc") == 2  # a bare id finds the claim
    assert seqs("?target=k1&action=key.revoke") == 3
    assert seqs("?since=2000-01-01&until=2000-12-31") == 0
    today = AuditEntry.objects.latest("id").at.date().isoformat()
    assert seqs(f"?since={today}&until={today}") == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?since=yesterday", "The from date must be a date like 2026-11-25."),
        ("?since=2026-02-30", "The from date must be a date like 2026-11-25."),
        ("?since=2026-02-02&until=2026-02-01", "The &#x27;from&#x27; date is after the"),
        ("?before=abc", None),
        ("?before=99999999999999999999999", None),
    ],
)
def test_bad_filters_get_a_message_not_an_error(query, message):
    h.node()
    h.record(1)
    response = client_for(Role.AUDITOR).get(URL + query)
    assert response.status_code == 200
    if message:
        assert message in response.content.decode()


def test_verify_says_ok_then_names_the_first_bad_entry():
    h.two_anchor_trail()
    client = client_for(Role.AUDITOR)
    ok = client.post(VERIFY, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="verify-ok"' in ok
    assert "Entries #1 to #8 are anchored and unaltered" in ok
    assert "<html" not in ok  # htmx gets the panel only
    head = bytes(AuditEntry.objects.get(seq=8).hash).hex()
    assert f'data-testid="receipt">8:{head}</span>' in ok  # what an auditor notes

    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_auditentry SET why = 'covered after all' WHERE seq = 4")
    bad = client.post(VERIFY, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="verify-bad"' in bad
    assert "First bad entry: entry #4 (id" in bad


def test_verify_without_javascript_renders_the_whole_page():
    h.two_anchor_trail()
    page = client_for(Role.OPERATOR).post(VERIFY).content.decode()
    assert "<html" in page and 'data-testid="verify-ok"' in page
