"""Approved claims not paid yet are re-verified too: after a backdated key revocation they go
back to the adjusters and their payout is voided (no payment run pays it); approved again, the
same payout is reissued and paid once. A paid claim is never changed. Real claims, the real
approval service and payment runs, PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from claims.models import Claim, ClaimEvent, ClaimItem, ProviderKey
from claims.services import provider_key_revoke
from claims.states import ClaimStatus
from config.errors import Conflict
from jobs import services as jobs
from jobs.models import BatchJob, BatchResult
from payments import services as payments
from payments.models import PaymentRun, PaymentRunItem
from review.models import Approval, Payout
from review.roles import Role
from review.services import claim_approve, claim_deny, item_decide
from tests.claims import factories as cf
from tests.payments.helpers import approved_claims
from tests.review.factories import user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
S = ClaimStatus
P = PaymentRun.Status


def days_ago(n: int):
    return timezone.now().date() - timedelta(days=n)


def approved_on(claim: Claim, day) -> None:
    """As if the claim had been approved on ``day`` (its payout belongs to that period)."""
    when = datetime.combine(day, time(12), tzinfo=UTC)
    Payout.objects.filter(claim=claim).update(created_at=when)


def run_paying(day) -> PaymentRun:
    run = payments.payment_run_start(day)
    chunks: list[int] = []
    payments.payment_run_collect(run.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        payments.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    return run


def run_job(job: BatchJob) -> BatchJob:
    chunks: list[int] = []
    jobs.job_plan(job.pk, dispatch=chunks.append)
    for chunk_id in chunks:
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    return job


def test_a_backdated_revocation_sends_an_approved_claim_back_and_its_payout_is_never_paid(
    django_capture_on_commit_callbacks,
):
    kit = cf.make_provider()
    paid, approved = approved_claims(2, kit)
    approved_on(paid, days_ago(2))
    assert run_paying(days_ago(2)).settled == 1  # paid before anyone knew the key was stolen
    first_round = Claim.objects.get(pk=approved.pk).verification_runs
    payout = Payout.objects.get(claim=approved)

    with django_capture_on_commit_callbacks() as on_commit:
        provider_key_revoke(
            key=ProviderKey.objects.get(kid=kit.kid),
            at=min(paid.created_at, approved.created_at) - timedelta(minutes=5),
            reason="laptop stolen",
        )
    # A payment run before the job has run holds the payout (the key is revoked).
    approved_on(approved, days_ago(1))
    held = run_paying(days_ago(1))
    assert (held.status, held.settled, held.errors) == (P.FAILED, 0, 1)
    for callback in on_commit:  # what the revocation's commit does: start the job
        callback()
    job = run_job(BatchJob.objects.get(scope={"kid": kit.kid}))

    assert (job.status, job.total, job.failed, job.changed, job.skipped) == ("done", 2, 1, 1, 1)
    claim = Claim.objects.get(pk=approved.pk)
    assert (claim.status, claim.verdict) == (S.NEEDS_REVIEW, S.REJECTED)
    assert claim.verification_runs == first_round + 1  # a new review round
    last = claim.events.order_by("-id").first()
    assert last.new_status == S.NEEDS_REVIEW
    assert f"batch job {job.pk}" in last.reason and "approved, not paid" in last.reason
    assert "revoked" in last.reason and "laptop stolen" in last.reason
    moves = list(claim.events.filter(old_status=S.APPROVED).values_list("new_status", flat=True))
    assert moves == [S.VERIFYING]
    result = BatchResult.objects.get(job=job, claim=claim)
    assert result.changed and f"payout {payout.reference} voided" in result.reason
    payout.refresh_from_db()
    assert payout.voided_at is not None and payout.settled_at is None
    assert "laptop stolen" in payout.void_reason
    void = AuditEntry.objects.get(action="payout.void", target=f"claim:{claim.public_id}")
    assert void.data["reference"] == payout.reference
    assert AuditEntry.objects.filter(
        action="claim.status", target=f"claim:{claim.public_id}", data__from=S.APPROVED
    ).exists()
    # The run that held it released it; the run of today does not pay it.
    assert PaymentRunItem.objects.get(payout=payout).released_at is not None
    today = run_paying(days_ago(0))
    assert (today.total, today.settled) == (0, 0)
    payout.refresh_from_db()
    assert payout.settled_at is None and Claim.objects.get(pk=claim.pk).status == S.NEEDS_REVIEW

    # The paid claim is never changed, and the job says why.
    assert Claim.objects.get(pk=paid.pk).status == S.PAID
    assert Claim.objects.get(pk=paid.pk).verification_runs == first_round
    skipped = BatchResult.objects.get(job=job, claim=paid)
    assert (skipped.outcome, skipped.reason) == ("skipped", "not re-verified: the claim is paid")

    # Its signature is void: it can be denied, not approved again.
    adjuster = user_with(Role.ADJUSTER)
    with pytest.raises(Conflict) as refused:
        claim_approve(claim_id=claim.pk, user=adjuster)
    assert refused.value.code == "verdict_rejected"
    claim_deny(claim_id=claim.pk, user=adjuster, reason_code="16", text="Signed with a stolen key.")
    assert Payout.objects.get(pk=payout.pk).settled_at is None


def test_a_changed_verdict_voids_the_payout_and_a_new_approval_reissues_it_paid_once(settings):
    [claim] = approved_claims(1)
    payout = Payout.objects.get(claim=claim)
    assert payout.amount == Decimal("105.00")
    approved_on(claim, days_ago(1))
    settings.CLAIMS_REVIEW_ABOVE = Decimal("50.00")  # the rules changed: it is reviewed now
    job = run_job(jobs.job_start({"all": True}, reason="new review threshold"))
    assert (job.passed, job.changed) == (1, 1)
    claim.refresh_from_db()
    assert (claim.status, claim.verdict) == (S.NEEDS_REVIEW, S.NEEDS_REVIEW)
    payout.refresh_from_db()
    assert payout.voided_at is not None
    assert run_paying(days_ago(1)).total == 0  # voided: not paid

    # A new round: the adjuster who approved before may approve again (after an adjustment).
    original = Approval.objects.get(claim=claim).user
    item_decide(
        claim_id=claim.pk,
        user=original,
        sequence=1,
        action="adjust",
        amount=Decimal("80.00"),
        reason_code="45",
    )
    again = claim_approve(claim_id=claim.pk, user=original)
    assert again.payout.pk == payout.pk and again.payout.reference == payout.reference
    payout.refresh_from_db()
    assert (payout.amount, payout.voided_at, payout.void_reason) == (Decimal("80.00"), None, "")
    assert sorted(Approval.objects.filter(claim=claim).values_list("round", flat=True)) == [
        claim.verification_runs - 1,
        claim.verification_runs,
    ]
    reissue = AuditEntry.objects.get(action="payout.reissue")
    assert reissue.data["previous_amount"] == "105.00" and reissue.data["amount"] == "80.00"

    today = run_paying(days_ago(0))
    assert (today.status, today.settled) == (P.SETTLED, 1)
    assert today.totals.get().settled_amount == Decimal("80.00")
    assert Claim.objects.get(pk=claim.pk).status == S.PAID
    assert ClaimEvent.objects.filter(claim=claim, new_status=S.PAID).count() == 1


def test_an_unchanged_verdict_leaves_the_claim_approved_with_its_payout():
    [claim] = approved_claims(1)
    payout = Payout.objects.get(claim=claim)
    job = run_job(jobs.job_start({"all": True}, reason="nightly"))
    assert (job.passed, job.changed, job.skipped) == (1, 0, 0)
    claim.refresh_from_db()
    assert claim.status == S.APPROVED and claim.verification_runs == 2
    steps = list(claim.events.order_by("id").values_list("new_status", flat=True))[-3:]
    assert steps == [S.VERIFYING, S.VERIFIED, S.APPROVED]
    payout.refresh_from_db()
    assert payout.voided_at is None
    assert set(ClaimItem.objects.filter(claim=claim).values_list("adjudication", "benefit")) == {
        ("approved", Decimal("105.00"))
    }
    assert run_paying(days_ago(0)).settled == 1


def test_a_run_that_took_the_payout_before_the_job_never_pays_it_even_approved_again(settings):
    """The run collected the payout; the job voided it; an adjuster approved again with another
    amount; only then the run settles: it pays nothing (the old amount is not the payout's),
    and the next run pays the new amount, once."""
    [claim] = approved_claims(1)
    approved_on(claim, days_ago(1))
    run = payments.payment_run_start(days_ago(1))
    chunks: list[int] = []
    payments.payment_run_collect(run.pk, dispatch=chunks.append)  # took it, not settled yet
    settings.CLAIMS_REVIEW_ABOVE = Decimal("50.00")
    run_job(jobs.job_start({"all": True}))
    adjuster = Approval.objects.get(claim=claim).user
    item_decide(
        claim_id=claim.pk,
        user=adjuster,
        sequence=1,
        action="adjust",
        amount=Decimal("80.00"),
        reason_code="45",
    )
    assert claim_approve(claim_id=claim.pk, user=adjuster).payout.amount == Decimal("80.00")
    for chunk_id in chunks:
        payments.payment_chunk_settle(chunk_id)
    run.refresh_from_db()
    assert (run.status, run.settled, run.errors) == (P.FAILED, 0, 1)
    item = PaymentRunItem.objects.get(run=run)
    assert item.settled_at is None and "voided after this run took it" in item.error
    assert Payout.objects.get(claim=claim).settled_at is None

    today = run_paying(days_ago(0))
    assert (today.settled, today.totals.get().settled_amount) == (1, Decimal("80.00"))
    assert Claim.objects.get(pk=claim.pk).status == S.PAID
    assert ClaimEvent.objects.filter(claim=claim, new_status=S.PAID).count() == 1
