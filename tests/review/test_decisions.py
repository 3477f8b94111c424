"""Adjusters' decisions through review.services, against real claims (intake + verification).

Four-eyes, senior approvals, holds, item adjudication, denial, requests for information and the
provider's answer, illegal states (refused, nothing changed), and exactly one payout under 50
concurrent approvals on PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from audit.models import AuditEntry
from claims.models import Claim, ClaimEvent, ClaimItem
from claims.states import ClaimStatus
from config.errors import Conflict, DomainError, NotFound, Unprocessable
from review import services
from review.models import Approval, Hold, InfoRequest, Payout
from review.roles import Role
from tests.review.factories import decidable_claim, user_with

S = ClaimStatus
A, SA, AUD = Role.ADJUSTER, Role.SENIOR_ADJUSTER, Role.AUDITOR

DOCUMENT = {
    "resourceType": "DocumentReference",
    "status": "current",
    "description": "Operative report, appendectomy",
    "content": [
        {
            "attachment": {
                "contentType": "application/pdf",
                "title": "op-report.pdf",
                "size": 5,
                "data": "JVBERi0=",
            }
        }
    ],
}


def _fresh(claim: Claim) -> Claim:
    return Claim.objects.get(pk=claim.pk)


def _snapshot(claim: Claim) -> tuple:
    """Everything a refused decision must leave as it was."""
    claim = _fresh(claim)
    return (
        claim.status,
        claim.updated_at,
        list(ClaimItem.objects.filter(claim=claim).values_list("adjudication", "benefit")),
        Approval.objects.filter(claim=claim).count(),
        Payout.objects.filter(claim=claim).count(),
        ClaimEvent.objects.filter(claim=claim).count(),
        list(Hold.objects.filter(claim=claim).values_list("user_id", flat=True)),
        InfoRequest.objects.filter(claim=claim).count(),
    )


def _refused(exc_type, call, claim, code: str | None = None) -> DomainError:
    before = _snapshot(claim)
    with pytest.raises(exc_type) as info:
        call()
    assert _snapshot(claim) == before, "a refused decision changed something"
    if code:
        assert info.value.code == code, info.value.detail
    return info.value


@pytest.fixture
def role_groups():
    """Transactional tests empty every table, the groups of migration 0002 too."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)


@pytest.fixture
def four_eyes(settings):
    settings.REVIEW_FOUR_EYES_ABOVE = Decimal("1000.00")
    settings.REVIEW_SENIOR_ABOVE = Decimal("10000.00")


# --- approving -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_adjuster_approves_a_small_claim_and_one_payout_is_made(four_eyes):
    claim = decidable_claim(unit_price="105.00", procedures=2)
    adjuster = user_with(A)
    result = services.claim_approve(claim_id=claim.pk, user=adjuster, note="all in order")
    claim = _fresh(claim)
    assert claim.status == S.APPROVED
    payout = Payout.objects.get(claim=claim)
    assert payout.amount == Decimal("210.00") and payout.payee == claim.provider
    assert payout.created_by == adjuster and result.payout == payout
    assert "payout PO-" in result.message
    event = claim.events.last()
    assert (event.new_status, event.actor, event.reason) == (S.APPROVED, adjuster, "all in order")
    actions = list(
        AuditEntry.objects.filter(target=f"claim:{claim.public_id}").values_list(
            "action", flat=True
        )
    )
    assert "claim.approve" in actions and "payout.create" in actions


@pytest.mark.django_db
def test_four_eyes_needs_two_different_adjusters(four_eyes):
    claim = decidable_claim(unit_price="600.00", procedures=2)  # 1200 > 1000
    first, second = user_with(A), user_with(A)
    result = services.claim_approve(claim_id=claim.pk, user=first)
    assert result.payout is None and (result.needed, result.given) == (2, 1)
    assert "1 more needed" in result.message
    assert _fresh(claim).status == S.VERIFIED
    assert not Payout.objects.filter(claim=claim).exists()

    error = _refused(
        Conflict,
        lambda: services.claim_approve(claim_id=claim.pk, user=first),
        claim,
        "same_approver",
    )
    assert "already approved" in error.detail

    result = services.claim_approve(claim_id=claim.pk, user=second)
    assert result.payout is not None and result.payout.amount == Decimal("1200.00")
    assert _fresh(claim).status == S.APPROVED
    assert "approved by" in _fresh(claim).events.last().reason
    assert Approval.objects.filter(claim=claim).count() == 2


@pytest.mark.django_db
def test_items_cannot_change_between_the_two_approvals(four_eyes):
    claim = decidable_claim(unit_price="600.00", procedures=2)
    services.claim_approve(claim_id=claim.pk, user=user_with(A))
    _refused(
        Conflict,
        lambda: services.item_decide(
            claim_id=claim.pk, user=user_with(A), sequence=1, action="deny", reason_code="50"
        ),
        claim,
        "approval_pending",
    )


@pytest.mark.django_db
def test_no_request_for_information_between_the_two_approvals(four_eyes):
    claim = decidable_claim(unit_price="600.00", procedures=2)
    services.claim_approve(claim_id=claim.pk, user=user_with(A))
    _refused(
        Conflict,
        lambda: services.claim_request_info(
            claim_id=claim.pk, user=user_with(A), reason_code="records", question="Records?"
        ),
        claim,
        "approval_pending",
    )


@pytest.mark.django_db
def test_above_the_senior_amount_a_senior_adjuster_must_be_among_the_approvers(settings):
    settings.REVIEW_FOUR_EYES_ABOVE = Decimal("1000.00")
    settings.REVIEW_SENIOR_ABOVE = Decimal("1100.00")
    claim = decidable_claim(unit_price="600.00", procedures=2)  # 1200
    services.claim_approve(claim_id=claim.pk, user=user_with(A))
    error = _refused(
        services.Forbidden,
        lambda: services.claim_approve(claim_id=claim.pk, user=user_with(A)),
        claim,
        "senior_required",
    )
    assert "senior adjuster" in error.detail
    result = services.claim_approve(claim_id=claim.pk, user=user_with(SA))
    assert result.payout is not None

    # a senior's first approval counts: a plain adjuster may give the second
    other = decidable_claim(unit_price="600.00", procedures=2)
    services.claim_approve(claim_id=other.pk, user=user_with(SA))
    assert services.claim_approve(claim_id=other.pk, user=user_with(A)).payout is not None


@pytest.mark.django_db
def test_auditors_and_users_without_a_role_cannot_decide(four_eyes):
    claim = decidable_claim()
    for user in (user_with(AUD), user_with()):
        for call in (
            lambda u=user: services.claim_approve(claim_id=claim.pk, user=u),
            lambda u=user: services.claim_hold(claim_id=claim.pk, user=u),
            lambda u=user: services.claim_deny(
                claim_id=claim.pk, user=u, reason_code="50", text="no"
            ),
        ):
            error = _refused(services.Forbidden, call, claim)
            assert error.status_code == 403


# --- holds -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_hold_shows_who_reviews_and_keeps_others_from_deciding(four_eyes):
    claim = decidable_claim()
    holder, other, senior = user_with(A), user_with(A), user_with(SA)
    hold = services.claim_hold(claim_id=claim.pk, user=holder)
    assert hold.user == holder
    assert services.claim_hold(claim_id=claim.pk, user=holder).pk == hold.pk  # idempotent

    error = _refused(
        Conflict,
        lambda: services.claim_approve(claim_id=claim.pk, user=other),
        claim,
        "held_by_other",
    )
    assert holder.username in error.detail and error.extra["held_by"] == holder.username
    _refused(Conflict, lambda: services.claim_hold(claim_id=claim.pk, user=other), claim)
    _refused(
        services.Forbidden,
        lambda: services.claim_hold(claim_id=claim.pk, user=other, take_over=True),
        claim,
    )
    _refused(
        services.Forbidden, lambda: services.claim_release(claim_id=claim.pk, user=other), claim
    )
    _refused(
        Conflict,
        lambda: services.item_decide(
            claim_id=claim.pk, user=other, sequence=1, action="deny", reason_code="50"
        ),
        claim,
        "held_by_other",
    )

    taken = services.claim_hold(claim_id=claim.pk, user=senior, take_over=True)
    assert taken.user == senior and Hold.objects.get(claim=claim).user == senior
    entry = AuditEntry.objects.filter(action="claim.hold").last()
    assert entry.why == f"taken over from {holder.username}"

    services.claim_release(claim_id=claim.pk, user=senior)
    assert not Hold.objects.filter(claim=claim).exists()
    services.claim_approve(claim_id=claim.pk, user=other)
    assert _fresh(claim).status == S.APPROVED


@pytest.mark.django_db
def test_a_stale_hold_does_not_block_anyone(settings, four_eyes):
    claim = decidable_claim()
    holder, other = user_with(A), user_with(A)
    services.claim_hold(claim_id=claim.pk, user=holder)
    Hold.objects.filter(claim=claim).update(
        since=timezone.now() - timedelta(seconds=settings.REVIEW_HOLD_TTL_S + 60)
    )
    assert services.claim_hold(claim_id=claim.pk, user=other).user == other


@pytest.mark.django_db
def test_deciding_releases_the_hold(four_eyes):
    claim = decidable_claim()
    adjuster = user_with(A)
    services.claim_hold(claim_id=claim.pk, user=adjuster)
    services.claim_approve(claim_id=claim.pk, user=adjuster)
    assert not Hold.objects.filter(claim=claim).exists()


# --- items -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_item_adjust_and_deny_validate_their_input(four_eyes):
    claim = decidable_claim(unit_price="105.00", procedures=2)
    user = user_with(A)

    def decide(**kwargs):
        return lambda: services.item_decide(claim_id=claim.pk, user=user, **kwargs)

    adjust = {"sequence": 1, "action": "adjust", "reason_code": "45"}
    for kwargs, code in (
        ({**adjust, "reason_code": "", "amount": Decimal("50")}, "reason"),
        ({**adjust, "amount": Decimal("105.00")}, "amount"),
        ({**adjust, "amount": Decimal("-1")}, "amount"),
        ({**adjust, "amount": Decimal("1.005")}, "amount"),
        ({**adjust, "amount": Decimal("NaN")}, "amount"),
        ({**adjust, "amount": None}, "amount"),
        ({"sequence": 1, "action": "deny"}, "reason"),
        ({"sequence": 1, "action": "deny", "reason_code": "bogus"}, "reason"),
        ({"sequence": 1, "action": "pay-double"}, "action"),
    ):  # fmt: skip
        _refused(Unprocessable, decide(**kwargs), claim, code)
    _refused(NotFound, decide(sequence=9, action="approve"), claim)

    adjusted = services.item_decide(
        claim_id=claim.pk, user=user, sequence=1, action="adjust", amount=Decimal("80.5"),
        reason_code="45",
    )  # fmt: skip
    assert (adjusted.adjudication, adjusted.benefit, adjusted.reason_code) == (
        "adjusted",
        Decimal("80.5"),
        "45",
    )
    denied = services.item_decide(
        claim_id=claim.pk, user=user, sequence=2, action="deny", reason_code="96"
    )
    assert (denied.adjudication, denied.benefit) == ("denied", Decimal(0))
    result = services.claim_approve(claim_id=claim.pk, user=user)
    assert result.payout.amount == Decimal("80.50")  # only what the items allow
    items = {i.sequence: i for i in ClaimItem.objects.filter(claim=claim)}
    assert items[1].adjudication == "adjusted" and items[2].adjudication == "denied"


@pytest.mark.django_db
def test_item_approve_undoes_an_adjustment(four_eyes):
    claim = decidable_claim()
    user = user_with(A)
    services.item_decide(
        claim_id=claim.pk, user=user, sequence=1, action="adjust", amount=Decimal("1"),
        reason_code="45",
    )  # fmt: skip
    item = services.item_decide(claim_id=claim.pk, user=user, sequence=1, action="approve")
    assert (item.adjudication, item.benefit, item.reason_code) == ("approved", item.submitted, "")


@pytest.mark.django_db
def test_a_claim_whose_items_are_all_denied_cannot_be_approved(four_eyes):
    claim = decidable_claim()
    user = user_with(A)
    services.item_decide(claim_id=claim.pk, user=user, sequence=1, action="deny", reason_code="50")
    _refused(
        Conflict, lambda: services.claim_approve(claim_id=claim.pk, user=user), claim, "all_denied"
    )


# --- denying ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_denial_needs_a_code_and_a_sentence(four_eyes):
    claim = decidable_claim(unit_price="105.00", procedures=2)
    user = user_with(A)
    for code, text, err in (
        ("", "why", "reason"),
        ("999", "why", "reason"),
        ("50", "  ", "reason_text"),
    ):
        _refused(
            Unprocessable,
            lambda c=code, t=text: services.claim_deny(
                claim_id=claim.pk, user=user, reason_code=c, text=t
            ),
            claim,
            err,
        )  # fmt: skip
    services.claim_deny(claim_id=claim.pk, user=user, reason_code="50", text="Not necessary.")
    claim = _fresh(claim)
    assert claim.status == S.DENIED
    assert claim.events.last().reason.startswith("CARC 50 (")
    assert claim.events.last().reason.endswith("Not necessary.")
    assert set(claim.items.values_list("adjudication", "reason_code")) == {("denied", "50")}
    assert not Payout.objects.filter(claim=claim).exists()


# --- requests for information ------------------------------------------------------------------


@pytest.mark.django_db
def test_request_information_then_the_provider_answers_and_the_claim_comes_back(four_eyes):
    claim = decidable_claim()
    adjuster = user_with(A)
    _refused(
        Unprocessable,
        lambda: services.claim_request_info(
            claim_id=claim.pk, user=adjuster, reason_code="records", question=" "
        ),
        claim,
        "question",
    )
    request = services.claim_request_info(
        claim_id=claim.pk,
        user=adjuster,
        reason_code="operative-report",
        question="Please send the operative report.",
    )
    assert _fresh(claim).status == S.INFO_REQUESTED
    # while it waits, nobody decides
    _refused(
        Conflict,
        lambda: services.claim_approve(claim_id=claim.pk, user=adjuster),
        claim,
        "not_decidable",
    )
    _refused(
        Conflict,
        lambda: services.claim_request_info(
            claim_id=claim.pk, user=adjuster, reason_code="records", question="again?"
        ),
        claim,
    )
    provider_user = claim.submitted_by
    for bad, code in (
        ("a string", "attachment"),
        ({"resourceType": "Patient"}, "attachment"),
        ({"resourceType": "DocumentReference", "status": "current"}, "invalid_fhir"),
        ({**DOCUMENT, "status": "not-a-status"}, "invalid_fhir"),
        ({**DOCUMENT, "content": []}, "invalid_fhir"),
        ({"resourceType": "Binary", "data": "JVBERi0="}, "invalid_fhir"),
    ):  # fmt: skip
        _refused(
            Unprocessable,
            lambda b=bad: services.info_answer(claim_id=claim.pk, user=provider_user, attachment=b),
            claim,
            code,
        )
    answered = services.info_answer(
        claim_id=claim.pk, user=provider_user, attachment=DOCUMENT, text="Attached."
    )
    assert answered.pk == request.pk and answered.answered_at is not None
    assert answered.attachment["description"] == "Operative report, appendectomy"
    claim = _fresh(claim)
    assert claim.status == S.NEEDS_REVIEW
    assert claim.events.last().actor == provider_user
    _refused(
        Conflict,
        lambda: services.info_answer(claim_id=claim.pk, user=provider_user, attachment=DOCUMENT),
        claim,
        "no_open_request",
    )
    services.claim_approve(claim_id=claim.pk, user=adjuster)
    assert _fresh(claim).status == S.APPROVED


@pytest.mark.django_db
def test_only_the_claims_provider_can_answer(four_eyes):
    from tests.claims.factories import LAB, make_provider

    claim = decidable_claim()
    services.claim_request_info(
        claim_id=claim.pk, user=user_with(A), reason_code="records", question="Records, please."
    )
    for stranger in (make_provider(LAB).user, user_with(A)):
        _refused(
            NotFound,
            lambda u=stranger: services.info_answer(claim_id=claim.pk, user=u, attachment=DOCUMENT),
            claim,
            "unknown_claim",
        )


@pytest.mark.django_db
def test_a_binary_is_an_acceptable_answer(four_eyes):
    claim = decidable_claim()
    services.claim_request_info(
        claim_id=claim.pk, user=user_with(A), reason_code="records", question="Records, please."
    )
    binary = {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0="}
    services.info_answer(claim_id=claim.pk, user=claim.submitted_by, attachment=binary)
    assert _fresh(claim).status == S.NEEDS_REVIEW


# --- illegal states --------------------------------------------------------------------------


@pytest.mark.django_db
def test_decided_claims_cannot_be_decided_again(four_eyes):
    user = user_with(A)
    approved = decidable_claim()
    services.claim_approve(claim_id=approved.pk, user=user)
    denied = decidable_claim()
    services.claim_deny(claim_id=denied.pk, user=user, reason_code="50", text="No.")
    for claim in (approved, denied):
        for call in (
            lambda c=claim: services.claim_approve(claim_id=c.pk, user=user_with(A)),
            lambda c=claim: services.claim_deny(
                claim_id=c.pk, user=user, reason_code="50", text="No."
            ),
            lambda c=claim: services.claim_request_info(
                claim_id=c.pk, user=user, reason_code="records", question="?"
            ),
            lambda c=claim: services.item_decide(
                claim_id=c.pk, user=user, sequence=1, action="approve"
            ),
            lambda c=claim: services.claim_hold(claim_id=c.pk, user=user),
        ):
            _refused(Conflict, call, claim, "not_decidable")
    assert Payout.objects.filter(claim=approved).count() == 1


@pytest.mark.django_db
def test_a_claim_with_no_open_request_refuses_an_answer(four_eyes):
    claim = decidable_claim()
    _refused(
        Conflict,
        lambda: services.info_answer(
            claim_id=claim.pk, user=claim.submitted_by, attachment=DOCUMENT
        ),
        claim,
        "no_open_request",
    )  # fmt: skip


@pytest.mark.django_db
def test_bulk_approval_approves_small_verified_claims_and_says_why_it_skips_others(four_eyes):
    user = user_with(A)
    small, big, held = (
        decidable_claim(),
        decidable_claim(unit_price="600.00", procedures=2),
        decidable_claim(),
    )
    services.claim_hold(claim_id=held.pk, user=user_with(A))
    lines = services.claims_bulk_approve(claim_ids=[small.pk, big.pk, held.pk, 0], user=user)
    by_id = {line.claim_id: line for line in lines}
    assert by_id[small.pk].ok and _fresh(small).status == S.APPROVED
    assert not by_id[big.pk].ok and "two adjusters" in by_id[big.pk].message
    assert not by_id[held.pk].ok and "reviewing" in by_id[held.pk].message
    assert by_id[0].message == "no such claim"
    assert _fresh(big).status == S.VERIFIED and _fresh(held).status == S.VERIFIED


# --- concurrency -------------------------------------------------------------------------------

RACERS = 50


def _race(claim: Claim, users: list) -> list[str]:
    """Each user approves ``claim`` at the same moment, each on its own connection; the result
    codes (``ok`` or the refusal's code)."""
    start = threading.Barrier(len(users))

    def approve(user) -> str:
        try:
            start.wait()
            services.claim_approve(claim_id=claim.pk, user=user)
            return "ok"
        except DomainError as exc:
            return exc.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        return list(pool.map(approve, users))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_adjusters_approving_a_four_eyes_claim_at_once_make_one_payout(
    role_groups, four_eyes
):
    claim = decidable_claim(unit_price="600.00", procedures=2)
    users = [user_with(A) for _ in range(RACERS)]
    outcomes = _race(claim, users)
    assert outcomes.count("ok") == 2  # the first approval and the one that completes it
    assert set(outcomes) <= {"ok", "not_decidable"}
    assert Payout.objects.filter(claim=claim).count() == 1
    assert Approval.objects.filter(claim=claim).count() == 2
    assert _fresh(claim).status == S.APPROVED
    assert ClaimEvent.objects.filter(claim=claim, new_status=S.APPROVED).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_adjuster_approving_fifty_times_at_once_makes_one_payout(role_groups, four_eyes):
    claim = decidable_claim()
    user = user_with(A)
    outcomes = _race(claim, [user] * RACERS)
    assert outcomes.count("ok") == 1
    assert set(outcomes) <= {"ok", "not_decidable"}
    assert Payout.objects.filter(claim=claim).count() == 1
    assert Approval.objects.filter(claim=claim).count() == 1
    assert ClaimEvent.objects.filter(claim=claim, new_status=S.APPROVED).count() == 1


# --- found in review: amounts without a total, rejected verdicts, re-verification -------------


@pytest.mark.django_db
def test_a_claim_without_a_total_is_judged_by_its_items(settings):
    """FHIR makes Claim.total optional: the four-eyes rule reads the items then, never zero."""
    claim = decidable_claim(unit_price="1500.00")
    Claim.objects.filter(pk=claim.pk).update(total=None)
    first = services.claim_approve(claim_id=claim.pk, user=user_with(A))
    assert first.payout is None and first.needed == 2
    assert _fresh(claim).status == S.VERIFIED


@pytest.mark.django_db
def test_a_claim_whose_latest_verification_rejected_it_cannot_be_approved():
    claim = decidable_claim()
    Claim.objects.filter(pk=claim.pk).update(status=S.NEEDS_REVIEW, verdict=S.REJECTED)
    before = _snapshot(claim)
    with pytest.raises(Conflict) as refused:
        services.claim_approve(claim_id=claim.pk, user=user_with(A))
    assert refused.value.code == "verdict_rejected"
    assert _snapshot(claim) == before and not Payout.objects.exists()


@pytest.mark.django_db
def test_an_adjusters_line_decision_survives_a_re_verification(django_capture_on_commit_callbacks):
    from claims.verification import claim_reverify, claim_verify

    claim = decidable_claim(unit_price="500.00")
    services.item_decide(
        claim_id=claim.pk,
        user=user_with(A),
        sequence=1,
        action="adjust",
        amount=Decimal("100.00"),
        reason_code="45",
    )
    claim_reverify(claim_id=claim.pk)
    assert claim_verify(claim_id=claim.pk).status == S.VERIFIED
    item = ClaimItem.objects.get(claim=claim, sequence=1)
    assert (item.adjudication, item.benefit, item.reason_code) == (
        "adjusted",
        Decimal("100.00"),
        "45",
    )
    result = services.claim_approve(claim_id=claim.pk, user=user_with(A))
    assert result.payout.amount == Decimal("100.00")


@pytest.mark.django_db
def test_a_new_request_closes_one_the_claim_left_unanswered():
    claim = decidable_claim()
    adjuster = user_with(A)
    services.claim_request_info(
        claim_id=claim.pk, user=adjuster, reason_code="records", question="Records, please."
    )
    # a re-verification moved the claim on while the request was open
    Claim.objects.filter(pk=claim.pk).update(status=S.NEEDS_REVIEW)
    again = services.claim_request_info(
        claim_id=claim.pk, user=adjuster, reason_code="other", question="Still needed."
    )
    assert InfoRequest.objects.filter(claim=claim, answered_at__isnull=True).get() == again
    assert _fresh(claim).status == S.INFO_REQUESTED
