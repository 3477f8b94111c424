"""Verifying claims in a batch (``claim_verify_many``) concludes each claim exactly as verifying it
alone does: every fraud test runs again through a batch, and a mixed batch (clean claims, two
claims for one procedure, a preauthorization, a correction, one still waiting, one with a forged
signature) gets the verdicts, checks, reservations and item answers that one-by-one verification
gives. Real PostgreSQL, anchors, checkpoints and signatures."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from claims.models import BilledAnchor, Claim, ClaimCheck, ClaimEvent, ClaimItem
from claims.states import ClaimStatus
from claims.verification import claim_verify, claim_verify_many
from tests.claims import test_fraud
from tests.claims.factories import (
    anchor_procedure,
    checks,
    claim_for,
    claim_resource,
    make_provider,
    procedure,
    related_to,
    signed_body,
    submit,
)
from tests.claims.test_fraud import *  # noqa: F403  (every fraud test, run through a batch)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
S = ClaimStatus


def batch_verified(claim: Claim) -> Claim:
    """What ``verified`` does, through a batch of one."""
    done = claim_verify_many(claim_ids=[claim.pk])
    return next((c for c in done if c.pk == claim.pk), None) or Claim.objects.get(pk=claim.pk)


@pytest.fixture(autouse=True)
def _through_a_batch(monkeypatch):
    monkeypatch.setattr(test_fraud, "verified", batch_verified)


def _forged(kit) -> Claim:
    """A claim whose Bundle was changed after signing (the signature check must fail)."""
    a = anchor_procedure(procedure())
    bundle = json.loads(signed_body(kit, claim_resource([a]), [a]))
    tampered = bundle["entry"][0]["resource"]
    for line in (tampered["item"][0]["unitPrice"], tampered["item"][0]["net"], tampered["total"]):
        line["value"] = 1050.0
    return submit(kit, json.dumps(bundle).encode())


def _scenario(kit) -> list[Claim]:
    """Claims in submission order: what one batch, or one claim after another, verifies."""
    clean = [claim_for(kit)[0] for _ in range(3)]
    first, [a] = claim_for(kit)
    twice, _ = claim_for(kit, [a], unit_price="95.00")  # the same procedure again
    preauth, _ = claim_for(kit, use="preauthorization")
    original, [b] = claim_for(kit)
    correction, _ = claim_for(
        kit, [b], unit_price="90.00", related=related_to(original, "replaces")
    )
    forged = _forged(kit)
    waiting, _ = claim_for(kit, [anchor_procedure(procedure(), seal=False)])  # last: unsealed
    return [*clean, first, twice, preauth, original, correction, forged, waiting]


def _outcome(claim: Claim) -> dict:
    claim.refresh_from_db()
    found = checks(claim)
    return {
        "status": claim.status,
        "verdict": claim.verdict,
        "runs": claim.verification_runs,
        "checks": sorted(
            (n if not n.startswith("procedure:") else "procedure", c.outcome)
            for n, c in found.items()
        ),
        "events": list(
            ClaimEvent.objects.filter(claim=claim)
            .order_by("id")
            .values_list("old_status", "new_status")
        ),
        "items": list(
            ClaimItem.objects.filter(claim=claim).values_list(
                "adjudication", "reason_code", "eligible", "benefit"
            )
        ),
        "live": BilledAnchor.objects.filter(claim=claim, live=True).count(),
    }


def test_a_mixed_batch_concludes_every_claim_as_one_by_one_verification_does():
    alone = _scenario(make_provider())
    for claim in alone:
        claim_verify(claim_id=claim.pk)
    batched = _scenario(make_provider())
    done = claim_verify_many(claim_ids=[c.pk for c in batched])

    assert {c.pk for c in done} == {c.pk for c in batched}
    expected = [_outcome(c) for c in alone]
    assert [_outcome(c) for c in batched] == expected
    statuses = [e["status"] for e in expected]
    assert statuses == [S.VERIFIED] * 4 + [S.REJECTED, S.NEEDS_REVIEW, S.SUPERSEDED,
                                           S.VERIFIED, S.REJECTED, S.VERIFYING]  # fmt: skip
    twice = batched[4]
    assert checks(twice)["double_billing"].evidence["anchors"][0]["billed_by"] == str(
        batched[3].public_id
    )


def test_a_batch_reads_and_writes_each_table_once_whatever_its_size():
    kit = make_provider()
    small = [claim_for(kit)[0] for _ in range(2)]
    large = [claim_for(kit)[0] for _ in range(8)]

    def statements(claims: list[Claim]) -> int:
        with CaptureQueriesContext(connection) as ctx:
            done = claim_verify_many(claim_ids=[c.pk for c in claims])
        assert [c.status for c in done] == [S.VERIFIED] * len(claims)
        return len(ctx.captured_queries)

    statements(large[:1])  # warm: the checkpoint's signatures are judged once per process
    two, seven = statements(small), statements(large[1:])
    # the reads, the reservation, the transitions (claim_transitions_many), the check rows
    # and the item answers: each one statement per batch, whatever its size
    assert seven == two, (two, seven)
    assert two < 2 * 16, two  # 16 statements verify one claim alone
    assert ClaimCheck.objects.filter(claim__in=large + small, outcome="pass").count() > 0


def test_pulling_takes_the_oldest_received_claims_and_leaves_concluded_ones_alone():
    kit = make_provider()
    done_before, _ = claim_for(kit)
    claim_verify(claim_id=done_before.pk)
    waiting = [claim_for(kit)[0] for _ in range(3)]

    taken = claim_verify_many(pull=2)
    assert [c.pk for c in taken] == [c.pk for c in waiting[:2]]
    assert [c.status for c in taken] == [S.VERIFIED, S.VERIFIED]
    assert Claim.objects.get(pk=waiting[2].pk).status == S.RECEIVED
    assert claim_verify_many(claim_ids=[done_before.pk]) == []  # concluded: left alone
    assert ClaimEvent.objects.filter(claim=done_before).count() == 3  # received, verifying, verdict


def test_a_claim_submitted_twice_under_one_key_is_verified_once_in_a_batch():
    kit = make_provider()
    a = anchor_procedure(procedure())
    claim, _ = claim_for(kit, [a])
    again = submit(kit, bytes(claim.body), key=claim.idempotency_key)
    assert again.pk == claim.pk
    done = claim_verify_many(claim_ids=[claim.pk, again.pk])
    assert len(done) == 1 and done[0].status == S.VERIFIED
    assert done[0].verification_runs == 1


def test_check_rows_a_batch_writes_read_back_exactly_and_a_clash_is_an_integrity_error():
    from django.db import IntegrityError, transaction

    from config.bulk import insert_rows

    kit = make_provider()
    claims = [claim_for(kit)[0] for _ in range(2)]
    claim_verify_many(claim_ids=[c.pk for c in claims])
    written = list(ClaimCheck.objects.filter(claim__in=claims).order_by("id"))
    fields = ("claim_id", "run", "name", "outcome", "sentence", "evidence", "checked_at")

    def copies(run_offset: int, extra: dict) -> list[tuple]:
        return [tuple({**{f: getattr(r, f) for f in fields}, "run": r.run + run_offset,
                       "evidence": {**r.evidence, **extra}}.values())
                for r in written]  # fmt: skip

    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(ClaimCheck, fields, copies(0, {}))  # one result per check per run, again
    odd = {"note": 'é ✓ \\ \t "quoted"', "amount": "105.00", "ratio": 0.5, "none": None}
    assert insert_rows(ClaimCheck, fields, copies(1, odd)) == len(written)
    again = list(ClaimCheck.objects.filter(claim__in=claims, run=2).order_by("id"))
    assert [tuple(getattr(r, f) for f in fields) for r in again] == copies(1, odd)


def _released_then_billed(kit_a, kit_b) -> tuple[Claim, Claim]:
    """A verified claim whose key is then revoked from before its receipt, and a claim of another
    key billing the same procedure (double billing while the first one holds it)."""
    from datetime import timedelta

    from claims.models import ProviderKey
    from claims.verification import claim_reverify

    first, [a] = claim_for(kit_a)
    claim_verify(claim_id=first.pk)
    second, _ = claim_for(kit_b, [a])
    ProviderKey.objects.filter(pk=kit_a.key.pk).update(
        revoked_at=first.created_at - timedelta(seconds=1), revocation_reason="stolen"
    )
    claim_reverify(claim_id=first.pk)  # run 2: its signature now fails, it releases the anchor
    return first, second


def test_an_anchor_released_earlier_in_a_batch_is_billable_later_in_it_as_one_by_one():
    alone = _released_then_billed(make_provider(), make_provider())
    for claim in alone:
        claim_verify(claim_id=claim.pk)
    batched = _released_then_billed(make_provider(), make_provider())
    done = claim_verify_many(claim_ids=[c.pk for c in batched])

    assert [c.status for c in done] == [S.REJECTED, S.VERIFIED]
    assert [_outcome(c) for c in batched] == [_outcome(c) for c in alone]
    assert not BilledAnchor.objects.get(claim=batched[0]).live
    assert BilledAnchor.objects.get(claim=batched[1]).live
