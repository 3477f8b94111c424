"""One test per fraud class: each claim is rejected by the right check, with evidence and a
sentence a person can read. Real anchors, real checkpoints and cosignatures, real signatures."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from claims import jws
from claims.models import BilledAnchor, ClaimCheck, ClaimEvent, ClaimItem, ProviderKey
from claims.services import provider_key_revoke
from claims.states import ClaimStatus
from config.errors import Unprocessable
from ledger import anchor, keys, note, services
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, MemberKey
from tests.claims.factories import (
    LAB,
    Anchored,
    anchor_procedure,
    checks,
    claim_for,
    claim_resource,
    make_provider,
    procedure,
    related_to,
    signed_body,
    submit,
    verified,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
S = ClaimStatus


@pytest.fixture
def kit():
    return make_provider()


def rejected_by(claim, name: str) -> ClaimCheck:
    """Verify ``claim``; it must be rejected, and check ``name`` must say why."""
    claim = verified(claim)
    assert claim.status == S.REJECTED, {n: c.outcome for n, c in checks(claim).items()}
    assert claim.verdict == S.REJECTED
    found = checks(claim)
    failing = [c for n, c in found.items() if n == name or n.startswith(name + ":")]
    assert failing, f"no check {name}: {list(found)}"
    check = failing[0]
    assert check.outcome == "fail", (check.outcome, check.sentence)
    assert check.sentence.strip() and check.evidence
    event = ClaimEvent.objects.filter(claim=claim, new_status=S.REJECTED).get()
    assert event.reason
    assert not BilledAnchor.objects.filter(claim=claim, live=True).exists()
    for item in ClaimItem.objects.filter(claim=claim):
        assert item.adjudication == "denied" and item.reason_code
    return check


def test_a_body_changed_after_signing_fails_the_signature(kit):
    claim_json = claim_resource([a := anchor_procedure(procedure())])
    bundle = json.loads(signed_body(kit, claim_json, [a]))
    tampered = bundle["entry"][0]["resource"]  # ten times the price, amounts still adding up
    for line in (tampered["item"][0]["unitPrice"], tampered["item"][0]["net"], tampered["total"]):
        line["value"] = 1050.0
    claim = submit(kit, json.dumps(bundle).encode())

    check = rejected_by(claim, "signature")
    assert "changed after signing" in check.sentence
    assert check.evidence["kid"] == kit.kid
    assert checks(claim)["fhir"].outcome == "pass"  # only the signature can tell


def test_a_claim_signed_with_another_providers_key_under_our_kid_fails(kit):
    forger = make_provider(LAB)
    a = anchor_procedure(procedure())
    body = signed_body(kit, claim_resource([a]), [a], private_jwk=forger.private_jwk, kid=kit.kid)
    check = rejected_by(submit(kit, body), "signature")
    assert "does not verify" in check.sentence
    assert check.evidence["provider"] == kit.provider.name


def test_an_unknown_kid_is_refused_at_intake_and_a_deleted_key_fails_verification(kit):
    a = anchor_procedure(procedure())
    private, public = jws.generate_key()
    body = signed_body(kit, claim_resource([a]), [a], private_jwk=private, kid=public["kid"])
    with pytest.raises(Unprocessable) as refused:
        submit(kit, body)
    assert refused.value.code == "unknown_key"

    claim, _ = claim_for(kit)
    ProviderKey.objects.filter(pk=kit.key.pk).delete()  # gone between intake and verification
    check = rejected_by(claim, "signature")
    assert "is registered" in check.sentence and check.evidence["kid"] == kit.kid


def test_a_key_revoked_before_receipt_fails_the_signature(kit):
    provider_key_revoke(
        key=kit.key, at=timezone.now() - timedelta(minutes=1), reason="laptop stolen"
    )
    claim, _ = claim_for(kit)
    check = rejected_by(claim, "signature")
    assert "revoked" in check.sentence and "laptop stolen" in check.sentence
    assert check.evidence["key_revoked_at"] is not None


def test_an_expired_key_fails_the_signature(kit):
    kit.key.not_after = timezone.now() - timedelta(hours=1)
    kit.key.save(update_fields=["not_after"])
    claim, _ = claim_for(kit)
    check = rejected_by(claim, "signature")
    assert "expired" in check.sentence
    assert check.evidence["key_not_after"].startswith(kit.key.not_after.strftime("%Y-%m-%d"))


def test_a_procedure_never_anchored_fails_its_procedure_check(kit):
    services.ledger_seal_and_cosign()
    never = Anchored(procedure(), anchor.new_salt(), 10**9, os.urandom(32))
    claim, _ = claim_for(kit, [never])
    check = rejected_by(claim, "procedure")
    assert f"No leaf {10**9}" in check.sentence
    assert check.evidence["leaf_index"] == 10**9
    item = ClaimItem.objects.get(claim=claim)
    assert item.reason_code == "procedure-not-proven"


def test_a_wrong_salt_fails_the_commitment(kit):
    a = anchor_procedure(procedure())
    a.salt = anchor.new_salt()
    claim, _ = claim_for(kit, [a])
    check = rejected_by(claim, "procedure")
    assert "wrong salt" in check.sentence
    assert check.evidence["leaf_commitment"] != check.evidence["commitment"]


def test_a_procedure_anchored_by_another_member_fails_the_binding(kit):
    a = anchor_procedure(procedure(), LAB)
    claim, _ = claim_for(kit, [a])
    check = rejected_by(claim, "binding")
    assert f"anchored by {LAB}" in check.sentence
    assert check.evidence["procedures"][0]["leaf_member"] == LAB
    assert checks(claim)[f"procedure:{a.full_url}"].outcome == "pass"  # the anchor itself is fine


def test_a_checkpoint_without_quorum_waits_and_verifies_once_the_quorum_forms(kit):
    """Two of three witnesses are down: the checkpoint is not final, the claim waits."""
    a = anchor_procedure(procedure(), seal=False)
    witnesses = MemberKey.objects.filter(purpose=MemberKey.Purpose.COSIGN).exclude(
        member__name=kit.provider.member.name
    )
    down = list(witnesses.values_list("pk", flat=True))
    MemberKey.objects.filter(pk__in=down).update(revoked_at=timezone.now())
    services.ledger_seal_and_cosign()
    claim, _ = claim_for(kit, [a])

    claim = verified(claim)
    assert claim.status == S.VERIFYING and claim.waiting_since is not None
    wait = checks(claim)[f"procedure:{a.full_url}"]
    assert wait.outcome == "wait"
    assert "1 of the 2 cosignatures" in wait.sentence
    assert wait.evidence["checkpoint"]["cosigners"][0]["member"] == kit.provider.member.name
    assert BilledAnchor.objects.filter(claim=claim, live=True).count() == 1  # reserved meanwhile

    MemberKey.objects.filter(pk__in=down).update(revoked_at=None)
    services.checkpoint_cosign(checkpoint=services.checkpoint_latest())
    claim = verified(claim)
    assert claim.status == S.VERIFIED
    assert checks(claim)[f"procedure:{a.full_url}"].outcome == "pass"
    assert ClaimCheck.objects.filter(claim=claim).count() == len(checks(claim))  # one run


def _tamper(sql: str, params: list) -> None:
    """Rewrite a ledger row as an attacker with database access would: around the trigger."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


def _forge_other_key(cp: Checkpoint) -> None:
    attacker, _ = note.generate_key(settings.LEDGER_ORIGIN)
    root = os.urandom(32)
    body = CheckpointBody(settings.LEDGER_ORIGIN, cp.size, root).body()
    _tamper(
        "UPDATE ledger_checkpoint SET note = %s, root_hash = %s WHERE id = %s",
        [note.sign(body, attacker), root, cp.pk],
    )


def _tamper_root_column(cp: Checkpoint) -> None:
    _tamper("UPDATE ledger_checkpoint SET root_hash = %s WHERE id = %s", [os.urandom(32), cp.pk])


def _equivocate(cp: Checkpoint) -> None:
    """The operator's own key signs another tree of the same size (a split view)."""
    root = os.urandom(32)
    body = CheckpointBody(settings.LEDGER_ORIGIN, cp.size, root).body()
    _tamper(
        "UPDATE ledger_checkpoint SET note = %s, root_hash = %s WHERE id = %s",
        [note.sign(body, keys.operator_signer_key()), root, cp.pk],
    )


@pytest.mark.parametrize(
    ("forge", "said"),
    [
        (_forge_other_key, "not signed by the log operator's key"),
        (_tamper_root_column, "not what its row says"),
        (_equivocate, "not the root of the stored tree"),
    ],
)
def test_a_forked_checkpoint_fails_the_procedure(kit, forge, said):
    claim, _ = claim_for(kit)
    forge(services.checkpoint_latest())
    check = rejected_by(claim, "procedure")
    assert "Forked checkpoint" in check.sentence and said in check.sentence
    assert check.evidence["checkpoint"]["forked"]


def test_the_same_procedure_billed_twice_fails_double_billing(kit):
    first, [a] = claim_for(kit)
    assert verified(first).status == S.VERIFIED
    second, _ = claim_for(kit, [a], unit_price="95.00")
    check = rejected_by(second, "double_billing")
    assert str(first.public_id) in check.sentence
    assert check.evidence["anchors"][0]["billed_by"] == str(first.public_id)
    assert ClaimItem.objects.get(claim=second).reason_code == "double-billed"
    assert BilledAnchor.objects.filter(live=True).get().claim_id == first.pk


def test_an_item_pointing_at_an_undisclosed_procedure_fails_fhir(kit):
    a = anchor_procedure(procedure())
    claim_json = claim_resource([a])
    claim_json["procedure"].append(
        {"sequence": 2, "procedureReference": {"reference": "urn:uuid:not-disclosed"}}
    )
    claim_json["item"][0]["procedureSequence"] = [2]
    claim = submit(kit, signed_body(kit, claim_json, [a]))
    check = rejected_by(claim, "fhir")
    assert "not a disclosed Procedure" in check.sentence
    assert check.evidence["broken_references"][0]["reference"] == "urn:uuid:not-disclosed"


def test_a_procedure_performed_after_the_claim_was_created_fails_the_binding(kit):
    a = anchor_procedure(procedure(performed="2026-11-21T09:30:00Z"))  # Claim.created: 11-20
    claim, _ = claim_for(kit, [a])
    check = rejected_by(claim, "binding")
    assert "performed after the Claim was created" in check.sentence


def test_a_replayed_submission_is_the_same_claim_and_a_new_one_is_double_billing(
    kit, django_capture_on_commit_callbacks
):
    a = anchor_procedure(procedure())
    body = signed_body(kit, claim_resource([a]), [a])
    with django_capture_on_commit_callbacks() as queued:
        first = submit(kit, body, key="replay-1")
        again = submit(kit, body, key="replay-1")
    assert again.pk == first.pk and len(queued) == 1  # verified once
    assert verified(first).status == S.VERIFIED
    assert verified(again).verification_runs == 1  # a redelivery changes nothing
    assert ClaimCheck.objects.filter(claim=first).count() == len(checks(first))

    replayed = submit(kit, body, key="replay-2")  # the same Bundle under a new key
    assert replayed.pk != first.pk
    check = rejected_by(replayed, "double_billing")
    assert check.evidence["anchors"][0]["billed_by"] == str(first.public_id)


def test_a_not_done_procedure_cannot_be_billed(kit):
    a = anchor_procedure(procedure(status="not-done"))
    claim, _ = claim_for(kit, [a])
    check = rejected_by(claim, "binding")
    assert "not-done" in check.sentence


def test_a_preauthorization_is_flagged_and_bills_nothing(kit):
    claim, _ = claim_for(kit, use="preauthorization")
    claim = verified(claim)
    assert claim.status == S.NEEDS_REVIEW and claim.use == "preauthorization"
    business = checks(claim)["business"]
    assert business.outcome == "warn"
    assert "never paid as a claim" in business.sentence
    assert business.evidence["use"] == "preauthorization"
    assert not BilledAnchor.objects.filter(claim=claim).exists()
    assert ClaimItem.objects.get(claim=claim).adjudication == "pending"


@pytest.mark.parametrize("by", ["reference", "identifier"])
def test_a_correction_supersedes_its_original_without_tripping_double_billing(kit, by):
    original, [a] = claim_for(kit)
    assert verified(original).status == S.VERIFIED
    correction, _ = claim_for(
        kit, [a], unit_price="95.00", related=related_to(original, "replaces", by=by)
    )
    correction = verified(correction)
    assert correction.status == S.VERIFIED, checks(correction)
    assert correction.related_id == original.pk and correction.relationship == "replaces"
    original.refresh_from_db()
    assert original.status == S.SUPERSEDED
    assert BilledAnchor.objects.filter(live=True).get().claim_id == correction.pk
    assert checks(correction)["related"].outcome == "pass"
    assert ClaimEvent.objects.filter(claim=original, new_status=S.SUPERSEDED).exists()


def test_a_correction_from_another_provider_is_refused(kit):
    original, _ = claim_for(kit)
    verified(original)
    other = make_provider(LAB)
    b = anchor_procedure(procedure(), LAB)
    foreign, _ = claim_for(other, [b], related=related_to(original, "replaces"))
    check = rejected_by(foreign, "related")
    assert "no claim" in check.sentence
    original.refresh_from_db()
    assert original.status == S.VERIFIED


def test_a_void_voids_its_original(kit):
    original, [a] = claim_for(kit)
    assert verified(original).status == S.VERIFIED
    void, _ = claim_for(kit, [a], related=related_to(original, "voids"))
    void = verified(void)
    original.refresh_from_db()
    assert original.status == S.VOIDED
    assert void.status == S.VOIDED and void.verdict == S.VERIFIED  # applied, never paid itself
    assert not BilledAnchor.objects.filter(live=True).exists()
    assert ClaimItem.objects.get(claim=void).reason_code == "void-request"


def test_a_signature_made_before_a_later_revocation_stays_valid(kit):
    claim, _ = claim_for(kit)
    provider_key_revoke(key=kit.key, at=datetime.now(UTC) + timedelta(seconds=1), reason="rotated")
    assert verified(claim).status == S.VERIFIED
    assert checks(claim)["signature"].evidence["key_revoked_at"] is not None


def test_base64_evidence_is_what_the_ledger_holds(kit):
    claim, [a] = claim_for(kit)
    claim = verified(claim)
    evidence = checks(claim)[f"procedure:{a.full_url}"].evidence
    assert base64.b64decode(evidence["leaf_hash"]) == a.leaf_hash
    assert evidence["leaf_index"] == a.leaf_index
