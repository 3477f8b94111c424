"""The claim page and its decisions through Django's test client, per role."""

from __future__ import annotations

import pytest
from django.test import Client

from claims.models import Claim
from claims.states import ClaimStatus
from review import services
from review.models import Payout
from review.roles import Role
from tests.claims import factories as cf
from tests.review.factories import PASSWORD, decidable_claim, user_with

pytestmark = pytest.mark.django_db
S = ClaimStatus
HX = {"HTTP_HX_REQUEST": "true"}


def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def url(claim: Claim, action: str = "") -> str:
    return f"/claims/{claim.public_id}/{action}"


def status_of(claim: Claim) -> str:
    return Claim.objects.get(pk=claim.pk).status


@pytest.fixture
def four_eyes(settings):
    from decimal import Decimal

    settings.REVIEW_FOUR_EYES_ABOVE = Decimal("1000.00")
    settings.REVIEW_SENIOR_ABOVE = Decimal("10000.00")


def test_who_may_open_the_page(four_eyes):
    claim = decidable_claim()
    assert Client().get(url(claim)).status_code == 302  # to the login page
    assert "/login/" in Client().get(url(claim))["Location"]
    for user in (user_with(), user_with(Role.OPERATOR)):
        assert client_for(user).get(url(claim)).status_code == 403
    provider_user = claim.submitted_by
    provider_user.set_password(PASSWORD)
    provider_user.save()
    assert client_for(provider_user).get(url(claim)).status_code == 403
    assert client_for(user_with(Role.AUDITOR)).get(url(claim)).status_code == 200
    page = client_for(user_with(Role.ADJUSTER)).get(url(claim))
    assert page.status_code == 200
    missing = "/claims/00000000-0000-4000-8000-000000000000/"
    assert client_for(user_with(Role.ADJUSTER)).get(missing).status_code == 404


def test_the_page_shows_the_claim_its_checks_and_each_procedures_proof(four_eyes):
    claim = decidable_claim(procedures=2)
    html = client_for(user_with(Role.AUDITOR)).get(url(claim)).content.decode()
    assert str(claim.public_id) in html and "stmarys.example" in html
    assert "http://snomed.info/sct|80146002" in html  # the billed service, readably
    assert "Patient/p1" in html and "Coverage/c1" in html
    assert claim.kid in html  # the signature's key
    assert html.count('data-testid="proof-path"') == 2
    assert html.count('<svg class="proof-path"') == 2
    assert html.count("✓ Verified on this page") == 2
    for member in ("acme-insurance.example", "northlab.example", "stmarys.example"):
        assert member in html
    assert "<strong>verified</strong>" in html  # history: the move to verified


def test_an_auditor_reads_but_cannot_decide(four_eyes):
    claim = decidable_claim()
    auditor = client_for(user_with(Role.AUDITOR))
    html = auditor.get(url(claim)).content.decode()
    assert 'data-testid="read-only"' in html
    assert 'data-testid="approve-form"' not in html and "Decide this item" not in html
    for action, data in (
        ("approve", {}),
        ("deny", {"reason_code": "50", "text": "no"}),
        ("take", {}),
        ("request-info", {"reason_code": "records", "question": "?"}),
        ("items/1", {"action": "deny", "reason_code": "50"}),
    ):
        assert auditor.post(url(claim, action), data, **HX).status_code == 403
    assert status_of(claim) == S.VERIFIED


def test_an_adjuster_approves_with_htmx_and_gets_the_panels_back(four_eyes):
    claim = decidable_claim()
    adjuster = client_for(user_with(Role.ADJUSTER))
    html = adjuster.get(url(claim)).content.decode()
    assert 'accesskey="a"' in html and 'accesskey="t"' in html and 'accesskey="d"' in html
    answer = adjuster.post(url(claim, "approve"), {"note": "fine"}, **HX)
    assert answer.status_code == 200
    body = answer.content.decode()
    assert 'id="decide"' in body and "Approved; payout PO-" in body
    assert (
        'id="history" aria-labelledby="history-heading" data-testid="history" hx-swap-oob' in body
    )
    assert status_of(claim) == S.APPROVED and Payout.objects.filter(claim=claim).count() == 1
    again = adjuster.post(url(claim, "approve"), **HX)
    assert again.status_code == 409 and "only verified claims" in again.content.decode()


def test_four_eyes_through_the_page(four_eyes):
    claim = decidable_claim(unit_price="600.00", procedures=2)
    alice, bob = user_with(Role.ADJUSTER), user_with(Role.ADJUSTER)
    first = client_for(alice).post(url(claim, "approve"), **HX)
    assert (
        first.status_code == 200
        and "First approval recorded; 1 more needed" in first.content.decode()
    )
    page = client_for(alice).get(url(claim)).content.decode()
    assert "You already approved" in page and "1 of 2" in page
    twice = client_for(alice).post(url(claim, "approve"), **HX)
    assert twice.status_code == 409
    assert "you already approved this claim" in twice.content.decode()
    second = client_for(bob).post(url(claim, "approve"), **HX)
    assert second.status_code == 200 and status_of(claim) == S.APPROVED


def test_a_claim_held_by_another_adjuster_says_who_holds_it(four_eyes):
    claim = decidable_claim()
    alice, bob = user_with(Role.ADJUSTER), user_with(Role.ADJUSTER)
    assert client_for(alice).post(url(claim, "take"), **HX).status_code == 200
    page = client_for(bob).get(url(claim)).content.decode()
    assert f"{alice.username} is reviewing this claim" in page
    assert 'data-testid="approve-form"' not in page
    refused = client_for(bob).post(url(claim, "approve"), **HX)
    assert refused.status_code == 409
    assert f"{alice.username} is reviewing this claim" in refused.content.decode()
    senior = client_for(user_with(Role.SENIOR_ADJUSTER))
    assert "Take over" in senior.get(url(claim)).content.decode()
    assert senior.post(url(claim, "take"), {"take_over": "1"}, **HX).status_code == 200
    assert status_of(claim) == S.VERIFIED


def test_deny_needs_a_reason_and_a_sentence(four_eyes):
    claim = decidable_claim()
    adjuster = client_for(user_with(Role.ADJUSTER))
    refused = adjuster.post(url(claim, "deny"), {"reason_code": "50", "text": " "}, **HX)
    assert refused.status_code == 422 and "a denial needs a sentence" in refused.content.decode()
    refused = adjuster.post(url(claim, "deny"), {"reason_code": "", "text": "no"}, **HX)
    assert refused.status_code == 422 and "choose a denial reason code" in refused.content.decode()
    assert status_of(claim) == S.VERIFIED
    denied = adjuster.post(url(claim, "deny"), {"reason_code": "50", "text": "Not needed."}, **HX)
    assert denied.status_code == 200 and status_of(claim) == S.DENIED
    assert "CARC 50" in denied.content.decode()  # the history panel, out of band


def test_items_are_decided_one_by_one(four_eyes):
    claim = decidable_claim(procedures=2)
    adjuster = client_for(user_with(Role.ADJUSTER))
    bad = adjuster.post(
        url(claim, "items/1"), {"action": "adjust", "amount": "abc", "reason_code": "45"}, **HX
    )
    assert bad.status_code == 422 and "is not an amount" in bad.content.decode()
    assert 'data-testid="item-message"' in bad.content.decode()
    ok = adjuster.post(
        url(claim, "items/1"), {"action": "adjust", "amount": "80.00", "reason_code": "45"}, **HX
    )
    assert ok.status_code == 200 and "Item 1: adjusted, benefit 80.00 USD" in ok.content.decode()
    missing = adjuster.post(url(claim, "items/7"), {"action": "approve"}, **HX)
    assert missing.status_code == 404 and "the claim has no item 7" in missing.content.decode()
    adjuster.post(url(claim, "approve"), **HX)
    assert Payout.objects.get(claim=claim).amount == 185


def test_without_javascript_a_decision_redirects_back_with_a_message(four_eyes):
    claim = decidable_claim()
    adjuster = client_for(user_with(Role.ADJUSTER))
    answer = adjuster.post(url(claim, "approve"))
    assert answer.status_code == 302 and answer["Location"] == url(claim)
    page = adjuster.get(url(claim)).content.decode()
    assert "Approved; payout" in page and 'data-testid="payout"' in page
    refused = adjuster.post(url(claim, "approve"))
    assert refused.status_code == 409 and "<html" in refused.content.decode()


def test_request_for_information_and_the_answer_are_shown_as_text(four_eyes):
    claim = decidable_claim()
    adjuster = client_for(user_with(Role.ADJUSTER))
    asked = adjuster.post(
        url(claim, "request-info"),
        {"reason_code": "operative-report", "question": "Send the operative report."},
        **HX,
    )
    assert asked.status_code == 200 and status_of(claim) == S.INFO_REQUESTED
    page = adjuster.get(url(claim)).content.decode()
    assert "Send the operative report." in page and "WAITING" in page
    assert "Waiting for the provider's answer" in page
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "description": "Report <b>bold</b>",
        "content": [
            {
                "attachment": {
                    "contentType": "text/html",
                    "title": "<script>alert(1)</script>",
                    "data": "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                }
            }
        ],
    }
    services.info_answer(
        claim_id=claim.pk, user=claim.submitted_by, attachment=document, text="See attached."
    )
    page = adjuster.get(url(claim)).content.decode()
    assert "ANSWERED" in page and "See attached." in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "Report &lt;b&gt;bold&lt;/b&gt;" in page
    assert "text/html" in page and "25 bytes" in page  # the decoded size, never the content
    assert status_of(claim) == S.NEEDS_REVIEW and 'data-testid="approve-form"' in page


def test_while_verification_runs_the_page_polls_and_then_reloads():
    kit = cf.make_provider()
    claim, _ = cf.claim_for(kit)
    adjuster = client_for(user_with(Role.ADJUSTER))
    page = adjuster.get(url(claim)).content.decode()
    assert 'data-testid="live-status"' in page and f"/claims/{claim.public_id}/live" in page
    live = adjuster.get(url(claim, "live"), **HX)
    assert live.status_code == 200 and "HX-Refresh" not in live
    cf.verified(claim)
    live = adjuster.get(url(claim, "live"), **HX)
    assert live["HX-Refresh"] == "true"
    assert 'data-testid="live-status"' not in adjuster.get(url(claim)).content.decode()


def test_a_rejected_claim_shows_the_failed_check_and_nothing_to_decide():
    kit = cf.make_provider()
    unanchored = cf.Anchored(cf.procedure(), b"\1" * 32, 999_999, b"\2" * 32)
    claim, _ = cf.claim_for(kit, [unanchored])
    cf.verified(claim)
    page = client_for(user_with(Role.ADJUSTER)).get(url(claim)).content.decode()
    assert "REJECTED" in page and "FAIL" in page
    assert "No leaf 999999 exists on the ledger" in page
    assert 'data-testid="not-decidable"' in page and 'data-testid="approve-form"' not in page
    assert 'data-testid="proof-path"' not in page  # no proof to draw
