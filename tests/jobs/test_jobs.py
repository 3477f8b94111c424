"""Batch re-verification jobs: planning in bounded chunks, chunks counted once however often
they run, verdicts that change go to the CSV (and to the adjusters when the state table allows),
the operators' API and the management command. Real claims, real ledger, PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from claims.models import Claim
from claims.services import provider_key_revoke
from claims.states import ClaimStatus
from jobs import services as jobs
from jobs.management.commands.verify_claims import bar
from jobs.models import BatchChunk, BatchJob, BatchResult
from ledger import services as ledger
from tests.claims.factories import (
    anchor_procedure,
    claim_for,
    make_provider,
    procedure,
    verified,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
S = ClaimStatus


def verified_claims(kit, n: int) -> list[Claim]:
    """``n`` claims by ``kit``, each billing its own Procedure (one seal for all), verified."""
    anchored = [
        anchor_procedure(procedure(), kit.provider.member.name, seal=False) for _ in range(n)
    ]
    ledger.ledger_seal_and_cosign()
    claims = [verified(claim_for(kit, [a])[0]) for a in anchored]
    assert {c.status for c in claims} == {S.VERIFIED}
    return claims


def planned(job: BatchJob) -> list[int]:
    """Plan ``job`` here; the chunk ids it would have queued."""
    chunks: list[int] = []
    jobs.job_plan(job.pk, dispatch=chunks.append)
    return chunks


def test_a_job_counts_every_claim_once_even_when_a_chunk_runs_twice(settings):
    settings.JOBS_CHUNK_SIZE = 2
    kit = make_provider()
    claims = verified_claims(kit, 5)
    job = jobs.job_start({"all": True})
    chunks = planned(job)
    assert len(chunks) == 3
    for chunk_id in chunks:
        jobs.chunk_process(chunk_id)
    jobs.chunk_process(chunks[0])  # redelivered after it was done
    job.refresh_from_db()
    assert (job.status, job.total, job.done, job.passed, job.failed, job.changed) == (
        BatchJob.Status.DONE, 5, 5, 5, 0, 0,
    )  # fmt: skip
    assert job.chunks == job.chunks_done == 3 and job.finished_at is not None
    # one new verification run per claim, not two
    assert {c.verification_runs for c in Claim.objects.filter(pk__in=[c.pk for c in claims])} == {2}
    assert BatchResult.objects.filter(job=job).count() == 5


class WorkerKilled(BaseException):
    """What SIGKILL does to a chunk: nothing after this line runs, nothing is caught."""


def test_a_chunk_cut_short_is_rerun_without_counting_or_reverifying_twice(settings, monkeypatch):
    settings.JOBS_CHUNK_SIZE, settings.JOBS_VERIFY_BATCH = 4, 2
    kit = make_provider()
    verified_claims(kit, 4)
    job = jobs.job_start({"provider": kit.provider.pk})
    [chunk_id] = planned(job)
    real = jobs.claim_verify_many
    calls = []

    def dies_in_the_second_batch(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise WorkerKilled
        return real(**kwargs)

    monkeypatch.setattr(jobs, "claim_verify_many", dies_in_the_second_batch)
    with pytest.raises(WorkerKilled):
        jobs.chunk_process(chunk_id)
    assert BatchResult.objects.filter(job=job).count() == 2  # the first batch, committed
    assert BatchChunk.objects.get(pk=chunk_id).status == BatchChunk.Status.PENDING
    monkeypatch.setattr(jobs, "claim_verify_many", real)
    jobs.chunk_process(chunk_id)  # the redelivery
    jobs.chunk_process(chunk_id)  # and one more
    job.refresh_from_db()
    assert (job.status, job.done, job.passed) == (BatchJob.Status.DONE, 4, 4)
    assert BatchChunk.objects.get(pk=chunk_id).attempts == 2
    runs = Claim.objects.filter(provider=kit.provider).values_list("verification_runs", flat=True)
    assert sorted(runs) == [2, 2, 2, 2]


def test_a_claim_that_breaks_its_batch_is_one_error_and_the_others_are_reverified(
    settings, monkeypatch
):
    settings.JOBS_VERIFY_BATCH = 10
    kit = make_provider()
    claims = verified_claims(kit, 3)
    bad = claims[1].pk
    real_one = jobs.claim_verify

    def the_batch_breaks(**kwargs):
        raise ValueError("an unreadable claim")

    def one(*, claim_id):
        if claim_id == bad:
            raise ValueError("an unreadable claim")
        return real_one(claim_id=claim_id)

    monkeypatch.setattr(jobs, "claim_verify_many", the_batch_breaks)
    monkeypatch.setattr(jobs, "claim_verify", one)
    job = jobs.job_start({"all": True})
    for chunk_id in planned(job):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.status, job.done, job.passed, job.errors) == (BatchJob.Status.DONE, 3, 2, 1)
    error = BatchResult.objects.get(job=job, outcome=BatchResult.Outcome.ERROR)
    assert error.claim_id == bad and "an unreadable claim" in error.reason
    # the failed batch left nothing behind: the bad claim is as it was, the others have run 2
    runs = dict(Claim.objects.filter(provider=kit.provider).values_list("pk", "verification_runs"))
    assert runs == {c.pk: (1 if c.pk == bad else 2) for c in claims}
    assert Claim.objects.get(pk=bad).status == S.VERIFIED


def test_a_changed_verdict_is_counted_and_exported(settings):
    kit, other = make_provider(), make_provider()
    claims = verified_claims(kit, 3)
    untouched = verified_claims(other, 1)[0]
    first = min(c.created_at for c in claims)
    provider_key_revoke(key=kit.key, at=first - timedelta(seconds=1), reason="laptop stolen")
    job = jobs.job_start_for_revoked_key(kid=kit.kid, reason="laptop stolen")
    assert job.scope == {"kid": kit.kid} and "laptop stolen" in job.reason
    for chunk_id in planned(job):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.total, job.done, job.passed, job.failed, job.changed) == (3, 3, 0, 3, 3)
    assert Claim.objects.get(pk=untouched.pk).verification_runs == 1  # another key: not in scope
    for claim in claims:  # not rejected behind the adjusters' backs: back in their queue
        claim.refresh_from_db()
        assert (claim.status, claim.verdict) == (S.NEEDS_REVIEW, S.REJECTED)
        last = claim.events.order_by("-id").first()
        assert f"batch job {job.pk}" in last.reason and "revoked" in last.reason
        assert claim.billed_anchors.get().live  # it bills its procedure again

    out = io.StringIO()
    call_command("verify_claims", "--export", str(job.pk), stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {r["claim"] for r in rows} == {str(c.public_id) for c in claims}
    assert {(r["old_verdict"], r["new_verdict"]) for r in rows} == {("verified", "rejected")}
    assert all("revoked" in r["reason"] and "laptop stolen" in r["reason"] for r in rows)
    assert {r["status"] for r in rows} == {S.NEEDS_REVIEW}
    assert all("back to the adjusters" in r["reason"] for r in rows)


def test_a_verdict_that_improves_goes_back_to_the_adjusters():
    kit = make_provider()
    [claim] = verified_claims(kit, 1)
    # as if an earlier (buggy) run had rejected it
    Claim.objects.filter(pk=claim.pk).update(status=S.REJECTED, verdict=S.REJECTED)
    job = jobs.job_start({"kid": kit.kid})
    for chunk_id in planned(job):
        jobs.chunk_process(chunk_id)
    claim.refresh_from_db()
    assert claim.status == S.NEEDS_REVIEW and claim.verdict == S.VERIFIED
    last = claim.events.order_by("-id").first()
    assert f"batch job {job.pk}" in last.reason and "from rejected to verified" in last.reason
    job.refresh_from_db()
    assert (job.passed, job.changed) == (1, 1)


def test_claims_that_cannot_be_reverified_are_skipped_and_counted():
    kit = make_provider()
    a, _ = verified_claims(kit, 2)
    Claim.objects.filter(pk=a.pk).update(status=S.PAID)
    job = jobs.job_start({"all": True})
    for chunk_id in planned(job):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.done, job.passed, job.skipped, job.status) == (2, 1, 1, BatchJob.Status.DONE)
    assert BatchResult.objects.get(job=job, claim=a).reason == "not re-verified: the claim is paid"


def test_the_planner_holds_two_chunks_of_ids_at_most(settings):
    settings.JOBS_CHUNK_SIZE = 3
    kit = make_provider()
    verified_claims(kit, 7)
    job = jobs.job_start({"all": True})
    with CaptureQueriesContext(connection) as queries:
        chunks = planned(job)
    assert len(chunks) == 3
    reads = [q["sql"] for q in queries if 'FROM "claims_claim"' in q["sql"]]
    # keyset reads, one chunk ahead: 6 ids, then the 3 that complete two chunks' worth (1 left)
    assert len(reads) == 2
    assert all('"claims_claim"."id" >' in sql for sql in reads), reads
    assert ["LIMIT 6" in reads[0], "LIMIT 3" in reads[1]] == [True, True], reads
    sizes = list(BatchChunk.objects.filter(job=job).values_list("first_id", "last_id", "ids"))
    assert [len(ids) for _, _, ids in sizes] == [3, 3, 1]
    assert all(ids[0] == first and ids[-1] == last for first, last, ids in sizes)
    assert jobs.job_plan(job.pk, dispatch=lambda _: None).total == 7  # planned twice: same total


def test_scopes_select_the_right_claims():
    kit, other = make_provider(), make_provider()
    mine = verified_claims(kit, 2)
    theirs = verified_claims(other, 1)

    def ids(scope):
        return set(jobs.scope_claims(jobs.scope_clean(scope)).values_list("pk", flat=True))

    assert ids({"provider": kit.provider.pk}) == {c.pk for c in mine + theirs}  # one provider
    assert ids({"kid": other.kid}) == {theirs[0].pk}
    cut = theirs[0].created_at
    assert ids({"since": cut.isoformat()}) == {theirs[0].pk}
    assert ids({"until": cut.isoformat()}) == {c.pk for c in mine}
    size = theirs[0].checks.get(name__startswith="procedure:").evidence["checkpoint"]["size"]
    assert ids({"checkpoint": size}) == {theirs[0].pk}
    with pytest.raises(jobs.Unprocessable):
        jobs.scope_clean({"everything": True})
    with pytest.raises(jobs.Unprocessable):
        jobs.scope_clean({"since": "yesterday"})


def test_progress_has_a_rate_and_an_eta():
    now = timezone.now()
    job = BatchJob(
        scope={"all": True}, status=BatchJob.Status.RUNNING, planned=True, total=100, done=25,
        started_at=now - timedelta(seconds=10),
    )  # fmt: skip
    p = jobs.job_progress(job, now=now)
    assert (p["percent"], p["rate_per_s"], p["eta_s"]) == (25.0, 2.5, 30.0)
    assert bar(p).startswith("[#######.......................] 25/100  25.0% 2.5/s ETA 0:00:30")


# --- the operators' API --------------------------------------------------------------------------


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user("operator", is_staff=True)
    client.force_login(user)
    return client


def test_staff_start_list_and_follow_jobs(staff_client):
    kit = make_provider()
    response = staff_client.post(
        "/api/v1/jobs",
        {"scope": {"kid": kit.kid}, "reason": "audit"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["started_by"] == "operator"
    assert response["Location"] == f"/api/v1/jobs/{body['id']}"
    assert staff_client.get(body["url"]).json()["scope"] == {"kid": kit.kid}
    assert [j["id"] for j in staff_client.get("/api/v1/jobs").json()] == [body["id"]]
    csv_response = staff_client.get(body["changes_csv_url"])
    assert csv_response.status_code == 200 and csv_response["Content-Type"].startswith("text/csv")
    assert b"".join(csv_response.streaming_content).startswith(b"claim,provider,kid,old_verdict")
    bad = staff_client.post(
        "/api/v1/jobs", {"scope": {"kid": "nope"}}, content_type="application/json"
    )
    assert bad.status_code == 422 and bad.json()["code"] == "bad_scope"
    assert staff_client.get("/api/v1/jobs/999999").status_code == 404


def test_jobs_are_for_staff_only(client):
    kit = make_provider()
    client.force_login(kit.user)
    assert client.get("/api/v1/jobs").status_code == 403
    assert (
        client.post(
            "/api/v1/jobs", {"scope": {"all": True}}, content_type="application/json"
        ).status_code
        == 403
    )
    assert not BatchJob.objects.exists()


def test_two_deliveries_of_the_planning_at_once_plan_each_claim_once(settings):
    settings.JOBS_CHUNK_SIZE = 2
    kit = make_provider()
    claims = verified_claims(kit, 7)
    job = jobs.job_start({"all": True})
    sent: list[int] = []

    def dispatch(chunk_id: int) -> None:
        sent.append(chunk_id)
        if len(sent) == 1:  # a redelivered planning runs while the first is after chunk 0
            jobs.job_plan(job.pk, dispatch=sent.append)

    jobs.job_plan(job.pk, dispatch=dispatch)  # its chunk 1 is taken: it stops, the other planned
    job.refresh_from_db()
    assert job.planned and (job.chunks, job.total) == (4, 7)
    planned_ids = [i for ids in job.chunk_set.values_list("ids", flat=True) for i in ids]
    assert sorted(planned_ids) == sorted(c.pk for c in claims)  # each claim in one chunk
    for chunk_id in set(sent):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.status, job.done, job.passed) == (BatchJob.Status.DONE, 7, 7)


def test_a_chunk_of_claims_not_reverified_is_recorded_in_one_insert(settings):
    settings.JOBS_CHUNK_SIZE = 50
    kit = make_provider()
    claims = verified_claims(kit, 4)
    paid = [c.pk for c in claims[:3]]
    Claim.objects.filter(pk__in=paid).update(status=S.PAID)
    job = jobs.job_start({"all": True})
    [chunk_id] = planned(job)
    with CaptureQueriesContext(connection) as queries:
        jobs.chunk_process(chunk_id)
    inserts = [q["sql"] for q in queries if q["sql"].startswith('INSERT INTO "jobs_batchresult"')]
    assert len(inserts) == 2  # the three paid claims together, then the one re-verified
    job.refresh_from_db()
    assert (job.done, job.skipped, job.passed) == (4, 3, 1)
    assert set(BatchResult.objects.filter(job=job, claim_id__in=paid).values_list("reason")) == {
        ("not re-verified: the claim is paid",)
    }


def test_an_unchanged_verdict_leaves_the_claim_where_the_adjusters_put_it():
    kit = make_provider()
    asked, reviewed, plain = verified_claims(kit, 3)
    Claim.objects.filter(pk=asked.pk).update(status=S.INFO_REQUESTED)
    Claim.objects.filter(pk=reviewed.pk).update(status=S.NEEDS_REVIEW)
    job = jobs.job_start({"all": True})
    for chunk_id in planned(job):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.done, job.passed, job.changed) == (3, 3, 0)
    now = dict(Claim.objects.values_list("pk", "status"))
    assert now == {asked.pk: S.INFO_REQUESTED, reviewed.pk: S.NEEDS_REVIEW, plain.pk: S.VERIFIED}
    assert set(Claim.objects.values_list("verification_runs", flat=True)) == {2}
    last = Claim.objects.get(pk=asked.pk).events.order_by("-id").first()
    assert (
        last.reason == f"batch job {job.pk}: verdict unchanged (verified); back to info_requested"
    )


def test_a_job_ends_with_smaller_chunks_and_plans_each_claim_once(settings):
    """With several workers, a job whose last chunk is whole leaves one worker busy while the
    others idle: the last two chunks' worth is cut in halves, down to an eighth of a chunk."""
    settings.JOBS_CHUNK_SIZE = 16
    kit = make_provider()
    claims = verified_claims(kit, 40)
    job = jobs.job_start({"all": True})
    jobs.job_plan(job.pk, dispatch=lambda chunk_id: None)
    chunks = list(job.chunk_set.order_by("number").values_list("ids", flat=True))
    assert [len(ids) for ids in chunks] == [16, 12, 6, 3, 3]
    planned = [i for ids in chunks for i in ids]
    assert planned == sorted(c.pk for c in claims)  # ascending, each claim once
    for chunk_id in job.chunk_set.values_list("pk", flat=True):
        jobs.chunk_process(chunk_id)
    job.refresh_from_db()
    assert (job.status, job.chunks, job.done, job.passed) == (BatchJob.Status.DONE, 5, 40, 40)


def test_a_planning_cut_short_in_the_tapered_tail_still_plans_each_claim_once(settings):
    """The planner reads one chunk ahead and tapers the tail from what it read: a planning that
    dies after any chunk (resumed by the sweeper's redelivery) or meets a second delivery there
    still ends with every claim in exactly one chunk, none larger than JOBS_CHUNK_SIZE."""
    settings.JOBS_CHUNK_SIZE = 16
    kit = make_provider()
    ids = sorted(c.pk for c in verified_claims(kit, 40))  # chunks of 16, 12, 6, 3, 3

    class Died(Exception):
        pass

    for after in range(4):
        for how in ("died", "redelivered"):
            job = jobs.job_start({"all": True})
            sent: list[int] = []

            def dispatch(chunk_id: int, after=after, how=how, job=job, sent=sent) -> None:
                sent.append(chunk_id)
                if len(sent) == after + 1:
                    if how == "died":
                        raise Died
                    jobs.job_plan(job.pk, dispatch=sent.append)

            try:
                jobs.job_plan(job.pk, dispatch=dispatch)
            except Died:
                jobs.job_plan(job.pk, dispatch=sent.append)  # the sweeper's redelivery
            job.refresh_from_db()
            chunks = list(job.chunk_set.order_by("number").values_list("ids", flat=True))
            assert [i for c in chunks for i in c] == ids, (after, how)
            assert all(0 < len(c) <= 16 for c in chunks), (after, how, chunks)
            assert job.planned and (job.total, job.chunks) == (40, len(chunks)), (after, how)
