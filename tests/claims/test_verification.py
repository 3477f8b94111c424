"""Verification records every check with its evidence, is idempotent, and re-runs the same."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from claims import fhir_validation, jws, money
from claims.checks import Context
from claims.checks import binding as binding_check
from claims.models import BilledAnchor, ClaimCheck, ClaimEvent, ClaimItem, FeeScheduleEntry
from claims.services import provider_key_register
from claims.states import ClaimStatus, InvalidTransition, claim_transition
from claims.verification import claim_reverify, claim_verify
from config.errors import Unprocessable
from ledger import merkle, services
from ledger.models import Checkpoint
from tests.claims.factories import (
    LAB,
    anchor_procedure,
    checks,
    claim_for,
    claim_resource,
    make_provider,
    procedure,
    signed_body,
    submit,
    verified,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
S = ClaimStatus
ORDER = ["signature", "fhir", "procedure:", "binding", "double_billing", "business"]


@pytest.fixture
def kit():
    return make_provider()


def _summary(claim, run=None) -> dict[str, tuple[str, str]]:
    return {n: (c.outcome, c.sentence) for n, c in checks(claim, run).items()}


def test_a_genuine_claim_is_verified_and_every_check_is_recorded_in_order(kit):
    claim, [a] = claim_for(kit)
    claim = verified(claim)
    assert (claim.status, claim.verdict, claim.verification_runs) == (S.VERIFIED, S.VERIFIED, 1)
    rows = list(ClaimCheck.objects.filter(claim=claim).order_by("id"))
    assert [r.name if ":" not in r.name else "procedure:" for r in rows] == ORDER
    assert all(r.outcome == "pass" and r.sentence.endswith(".") for r in rows)
    events = list(ClaimEvent.objects.filter(claim=claim).values_list("old_status", "new_status"))
    assert events == [("", S.RECEIVED), (S.RECEIVED, S.VERIFYING), (S.VERIFYING, S.VERIFIED)]
    item = ClaimItem.objects.get(claim=claim)
    assert (item.adjudication, item.benefit, item.procedure_url) == (
        "approved",
        item.submitted,
        a.full_url,
    )


def test_the_procedure_evidence_replays_the_inclusion_proof(kit):
    """Evidence is enough for anyone to check the proof without us: leaf, path, signed root."""
    anchor_procedure(procedure())  # leaf 0, so that ours has a non-empty path
    claim, [a] = claim_for(kit)
    evidence = checks(verified(claim))[f"procedure:{a.full_url}"].evidence
    cp = evidence["checkpoint"]
    assert cp["final"] and len(cp["cosigners"]) == 3 and cp["quorum"] == 2
    assert cp["size"] == Checkpoint.objects.latest().size
    merkle.verify_inclusion(
        evidence["leaf_index"],
        cp["size"],
        base64.b64decode(evidence["leaf_hash"]),
        [base64.b64decode(h) for h in evidence["proof"]],
        base64.b64decode(cp["root_hash"]),
    )
    assert evidence["commitment"] == base64.b64encode(a and _commitment(a)).decode()
    assert evidence["member"] == kit.provider.member.name


def _commitment(a) -> bytes:
    from ledger import anchor

    return anchor.commitment(a.salt, a.procedure)


def test_signature_evidence_names_the_key_window_and_the_provider(kit):
    claim, _ = claim_for(kit)
    evidence = checks(verified(claim))["signature"].evidence
    assert evidence["kid"] == kit.kid
    assert evidence["provider"] == kit.provider.name
    assert evidence["key_not_before"] and evidence["key_revoked_at"] is None


def test_verifying_twice_changes_nothing(kit, django_assert_max_num_queries):
    claim, _ = claim_for(kit)
    claim = verified(claim)
    before = _summary(claim)
    with django_assert_max_num_queries(1):  # one read: the claim is not waiting any more
        again = claim_verify(claim_id=claim.pk)
    assert (again.status, again.verification_runs) == (S.VERIFIED, 1)
    assert _summary(again) == before
    assert ClaimCheck.objects.filter(claim=claim).count() == len(before)


def test_a_re_verification_is_run_two_with_the_same_results(
    kit, django_capture_on_commit_callbacks
):
    claim, _ = claim_for(kit)
    claim = verified(claim)
    with django_capture_on_commit_callbacks() as queued:
        claim = claim_reverify(claim_id=claim.pk, reason="nightly audit")
    assert len(queued) == 1 and claim.status == S.VERIFYING and claim.verification_runs == 2
    claim = verified(claim)
    assert claim.status == S.VERIFIED and claim.verification_runs == 2
    first, second = _summary(claim, 1), _summary(claim, 2)
    assert {n: o for n, (o, _) in first.items()} == {n: o for n, (o, _) in second.items()}
    assert ClaimCheck.objects.filter(claim=claim).count() == 2 * len(first)
    assert BilledAnchor.objects.filter(claim=claim, live=True).count() == 1  # still its own


def test_a_rejected_claim_re_verified_is_rejected_again(kit):
    first, [a] = claim_for(kit)
    verified(first)
    second, _ = claim_for(kit, [a], unit_price="99.00")
    assert verified(second).status == S.REJECTED
    claim_reverify(claim_id=second.pk)
    second = verified(second)
    assert second.status == S.REJECTED and second.verification_runs == 2
    assert checks(second, 2)["double_billing"].outcome == "fail"
    assert BilledAnchor.objects.filter(live=True).get().claim_id == first.pk


def test_one_result_per_check_per_run_is_a_database_rule(kit):
    claim, _ = claim_for(kit)
    claim = verified(claim)
    row = ClaimCheck.objects.filter(claim=claim).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        ClaimCheck.objects.create(
            claim=claim, run=row.run, name=row.name, outcome="pass", sentence="again",
            checked_at=row.checked_at,
        )  # fmt: skip


def test_an_illegal_transition_raises_and_changes_nothing(kit):
    claim, _ = claim_for(kit)
    claim = verified(claim)
    events = ClaimEvent.objects.filter(claim=claim).count()
    with pytest.raises(InvalidTransition):
        claim_transition(claim=claim, to=S.PAID)
    claim.refresh_from_db()
    assert claim.status == S.VERIFIED
    assert ClaimEvent.objects.filter(claim=claim).count() == events


def test_a_concluded_claim_is_not_verified_again(kit):
    claim, _ = claim_for(kit)
    claim = verified(claim)
    claim_transition(claim=claim, to=S.APPROVED, reason="looks right")
    claim = claim_verify(claim_id=claim.pk)
    assert claim.status == S.APPROVED and claim.verification_runs == 1
    with pytest.raises(InvalidTransition):
        claim_reverify(claim_id=claim.pk)


def test_waiting_too_long_becomes_needs_review_with_the_reason(kit, settings):
    settings.CLAIMS_VERIFY_WAIT_MAX_S = 0
    a = anchor_procedure(procedure(), seal=False)
    claim, _ = claim_for(kit, [a])
    claim = verified(claim)
    assert claim.status == S.VERIFYING
    assert checks(claim)[f"procedure:{a.full_url}"].outcome == "wait"
    rows = ClaimCheck.objects.filter(claim=claim).count()
    claim = verified(claim)  # the next attempt finds the wait has lasted long enough
    assert claim.status == S.NEEDS_REVIEW and claim.verification_runs == 1
    gave_up = checks(claim)[f"procedure:{a.full_url}"]
    assert gave_up.outcome == "warn" and gave_up.sentence.startswith("Stopped waiting after")
    assert "waited_s" in gave_up.evidence
    assert ClaimCheck.objects.filter(claim=claim).count() == rows  # the run was rewritten
    assert claim.waiting_since is None


def test_a_waiting_attempt_rewrites_its_run_and_records_one_wait_event(kit):
    a = anchor_procedure(procedure(), seal=False)
    claim, _ = claim_for(kit, [a])
    for _ in range(3):
        claim = verified(claim)
    assert claim.status == S.VERIFYING and claim.verification_runs == 1
    assert ClaimCheck.objects.filter(claim=claim).count() == len(checks(claim))
    waits = ClaimEvent.objects.filter(claim=claim, old_status=S.VERIFYING, new_status=S.VERIFYING)
    assert waits.count() == 1 and "not sealed" in waits.get().reason
    services.ledger_seal_and_cosign()
    assert verified(claim).status == S.VERIFIED


def test_a_fee_above_the_schedule_is_flagged_for_review(kit, settings):
    settings.CLAIMS_FEE_TOLERANCE = Decimal("0.10")
    FeeScheduleEntry.objects.create(
        system="http://snomed.info/sct", code="80146002", currency="USD", max_unit_price="90.00"
    )
    claim, _ = claim_for(kit, unit_price="105.00")  # 16.7 % above
    claim = verified(claim)
    assert claim.status == S.NEEDS_REVIEW
    business = checks(claim)["business"]
    assert business.outcome == "warn" and "fee schedule" in business.sentence
    assert business.evidence["fee_schedule"][0]["max_unit_price"] == "90.00"
    assert ClaimItem.objects.get(claim=claim).adjudication == "pending"


def test_a_fee_within_tolerance_passes(kit):
    FeeScheduleEntry.objects.create(
        system="http://snomed.info/sct", code="80146002", currency="USD", max_unit_price="100.00"
    )
    claim, _ = claim_for(kit, unit_price="105.00")  # 5 % above, tolerance 10 %
    assert verified(claim).status == S.VERIFIED


def test_a_total_above_the_review_threshold_is_flagged(kit, settings):
    settings.CLAIMS_REVIEW_ABOVE = Decimal("100.00")
    claim, _ = claim_for(kit, unit_price="105.00")
    claim = verified(claim)
    assert claim.status == S.NEEDS_REVIEW
    assert "above 100.00" in checks(claim)["business"].sentence


def test_a_coverage_that_does_not_cover_the_date_of_service_fails_binding(kit):
    """The claim format carries no Coverage today (docs/claim-format.md); when a Bundle does,
    binding checks its period against the date of service."""
    a = anchor_procedure(procedure())
    claim, _ = claim_for(kit, [a])
    bundle = money.loads(bytes(claim.body))
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:coverage-1",
            "resource": {
                "resourceType": "Coverage",
                "status": "active",
                "beneficiary": {"reference": "Patient/p1"},
                "payor": [{"reference": "Organization/acme-insurance.example"}],
                "period": {"start": "2025-01-01", "end": "2025-12-31"},
            },
        }
    )
    ctx = Context(claim, validated=fhir_validation.validate_bundle(bundle))
    result = binding_check.check(ctx)
    assert result.outcome == "fail" and "does not cover the date of service" in result.sentence
    assert result.evidence["coverage"][0]["period"]["end"] == "2025-12-31"


def test_a_procedure_about_another_patient_fails_binding(kit):
    a = anchor_procedure(procedure(patient="Patient/someone-else"))
    claim, _ = claim_for(kit, [a])
    claim = verified(claim)
    assert claim.status == S.REJECTED
    assert "is about Patient/someone-else" in checks(claim)["binding"].sentence


def test_amounts_that_do_not_add_up_fail_fhir(kit):
    a = anchor_procedure(procedure())
    resource = claim_resource([a], organization=kit.organization)
    resource["total"]["value"] = 999.0
    claim = verified(submit(kit, signed_body(kit, resource, [a])))
    assert claim.status == S.REJECTED
    fhir = checks(claim)["fhir"]
    assert fhir.outcome == "fail" and fhir.evidence["amount_problems"][0]["code"] == (
        "total-mismatch"
    )


# --- the first run trusts intake's FHIR validation under the same rules ------------------------


def _views(v: fhir_validation.ValidatedBundle) -> dict:
    """Everything the checks read from a validated Bundle."""
    return {
        "use": v.use, "status": v.status, "created": v.created, "reference": v.reference,
        "patient": v.patient, "insurer": v.insurer, "provider": v.provider,
        "insurance": v.insurance, "related": v.related, "items": v.items,
        "claim_procedures": v.claim_procedures, "total": v.total, "others": sorted(v.others),
        "procedures": [(p.index, p.full_url, p.id, p.status, p.subject, p.performed, p.codes)
                       for p in v.procedures],
    }  # fmt: skip


def test_views_built_without_the_models_are_those_validation_builds():
    from tests.claims import test_official_examples as official

    procedures = [official.load(n) for n in official.names("Procedure")[:3]]
    coverage = official.load(official.names("Coverage")[0])
    bundles = [official.wrap(official.load(n), *procedures, coverage)
               for n in official.names("Claim")]  # fmt: skip
    for bundle in bundles:
        validated = fhir_validation.validate_bundle(bundle)
        with fhir_validation.trusting_intake(fhir_validation.RULES_VERSION) as trusted:
            as_sent = fhir_validation.validate_bundle(bundle)
        assert trusted and as_sent.intake_rules == fhir_validation.RULES_VERSION
        assert validated.intake_rules == 0
        assert _views(as_sent) == _views(validated)


def test_the_first_run_trusts_intake_validation_under_the_same_rules(kit):
    claim, _ = claim_for(kit)
    assert claim.fhir_rules == fhir_validation.RULES_VERSION  # intake records its rules
    claim = verified(claim)

    fhir = checks(claim)["fhir"]
    said = f"validated at intake under rules v{fhir_validation.RULES_VERSION}"
    assert fhir.outcome == "pass" and fhir.evidence["fhir_validation"] == said
    assert fhir.sentence.startswith(f"Valid FHIR R4 ({said}); the amounts add up to")
    assert claim.status == S.VERIFIED


def test_a_trusted_bundle_still_has_its_amounts_and_references_checked(kit):
    a = anchor_procedure(procedure())
    resource = claim_resource([a], organization=kit.organization)
    resource["total"]["value"] = 999.0
    resource["item"][0]["procedureSequence"] = [7]  # no Claim.procedure 7
    claim = verified(submit(kit, signed_body(kit, resource, [a])))
    fhir = checks(claim)["fhir"]
    assert claim.status == S.REJECTED and fhir.outcome == "fail"
    assert fhir.evidence["fhir_validation"].startswith("validated at intake")
    assert fhir.evidence["amount_problems"][0]["code"] == "total-mismatch"
    assert (
        "Claim.procedure 7, which does not exist"
        in fhir.evidence["broken_references"][0]["problem"]
    )


def test_other_rules_validate_in_full_and_later_runs_trust_the_same_rules(kit, monkeypatch):
    older, _ = claim_for(kit)
    older.__class__.objects.filter(pk=older.pk).update(fhir_rules=0)  # before the column
    bumped, _ = claim_for(kit)
    again, _ = claim_for(kit)

    assert "fhir_validation" not in checks(verified(older))["fhir"].evidence
    with monkeypatch.context() as m:
        m.setattr(fhir_validation, "RULES_VERSION", fhir_validation.RULES_VERSION + 1)
        assert "fhir_validation" not in checks(verified(bumped))["fhir"].evidence
    assert "fhir_validation" in checks(verified(again), 1)["fhir"].evidence

    claim_reverify(claim_id=again.pk)  # run 2: a batch job re-verifying, same rules, same bytes
    again = verified(again)
    assert again.verification_runs == 2 and again.status == S.VERIFIED
    rerun = checks(again, 2)["fhir"]
    assert rerun.outcome == "pass" and "validated at intake" in rerun.evidence["fhir_validation"]

    claim_reverify(claim_id=again.pk)  # run 3 after the rules changed: in full
    with monkeypatch.context() as m:
        m.setattr(fhir_validation, "RULES_VERSION", fhir_validation.RULES_VERSION + 1)
        again = verified(again)
    rerun = checks(again, 3)["fhir"]
    assert rerun.outcome == "pass" and "fhir_validation" not in rerun.evidence
    assert rerun.sentence.startswith("Valid FHIR R4; the amounts add up to")


# The releases each RULES_VERSION was set with (pyproject.toml pins them exactly). Trusting an
# earlier validation is sound only under the same rules: upgrading either fails this test until
# RULES_VERSION is raised (every stored claim is then validated in full once more).
RULES_SET_WITH = {1: {"fhir.resources": "8.3.0", "fhir-core": "1.1.12"}}


def test_rules_version_is_raised_with_any_upgrade_of_fhir_resources():
    from importlib.metadata import version

    pinned = RULES_SET_WITH[fhir_validation.RULES_VERSION]
    assert {name: version(name) for name in pinned} == pinned, (
        "fhir.resources changed: raise fhir_validation.RULES_VERSION and pin the new releases here"
    )


# --- intake: who owns a signing key (remembered per process) -----------------------------------


def test_a_key_registered_after_a_refusal_is_accepted_at_once_and_never_for_another_provider(kit):
    a = anchor_procedure(procedure())
    private, public = jws.generate_key()
    body = signed_body(kit, claim_resource([a]), [a], private_jwk=private, kid=public["kid"])
    with pytest.raises(Unprocessable) as refused:
        submit(kit, body)
    assert refused.value.code == "unknown_key"

    provider_key_register(provider=kit.provider, public_jwk=public)  # a refusal is not remembered
    assert submit(kit, body).kid == public["kid"]

    other = make_provider(LAB)  # the same kid again, by a provider that does not own it
    with pytest.raises(Unprocessable) as refused:
        submit(other, body)
    assert refused.value.code == "unknown_key"

    b = anchor_procedure(procedure())
    again = signed_body(kit, claim_resource([b]), [b], private_jwk=private, kid=public["kid"])
    with CaptureQueriesContext(connection) as queries:
        submit(kit, again)
    assert not any("claims_providerkey" in q["sql"] for q in queries.captured_queries)
