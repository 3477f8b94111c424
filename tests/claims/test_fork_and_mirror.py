"""The procedure check (a) refuses a checkpoint that fork evidence contradicts, and (b) proves
each Procedure through a mirror of the log (C2SP tlog-tiles, LEDGER_MIRROR_URL) instead of this
node's own ledger tables. Real anchors, checkpoints, witnesses, and a live server for the mirror.
"""

from __future__ import annotations

import base64

import pytest
from django.conf import settings
from django.utils import timezone

from claims.models import BilledAnchor, ClaimEvent
from claims.states import ClaimStatus
from claims.verification import claim_verify_many
from ledger import anchor, keys, merkle, mirror_source, note, services, witness
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import ForkEvidence, Leaf, MemberKey, WitnessState
from tests.claims.factories import (
    HOSPITAL,
    LAB,
    anchor_procedure,
    checks,
    claim_for,
    make_provider,
    procedure,
    verified,
)

pytestmark = [pytest.mark.postgres]
S = ClaimStatus
URLS = "tests.consortium.urls"  # the node's URLs with the C2SP tlog-tiles endpoints at the root


def _split_view_then_seal(kit):
    """The log's key shows witness LAB another tree of the size the next checkpoint will have;
    LAB cosigns it. The honest checkpoint is then sealed: HOSPITAL and acme cosign it (a quorum
    of 2), LAB refuses it (two trees of one size) and keeps both notes as fork evidence."""
    a = anchor_procedure(procedure(), kit.provider.member.name, seal=False)
    n = a.leaf_index + 1
    honest = [bytes(h) for h in Leaf.objects.order_by("index").values_list("leaf_hash", flat=True)]
    assert len(honest) == n
    state = WitnessState.objects.filter(witness=LAB, origin=settings.LEDGER_ORIGIN).first()
    old = state.size if state else 0
    split = [*honest[: n - 1], merkle.leaf_hash(b"a procedure that never happened")]
    body = CheckpointBody(settings.LEDGER_ORIGIN, n, merkle.root_hash(split)).body()
    services.cosignature_request(
        member_key=MemberKey.objects.get(member__name=LAB, purpose=MemberKey.Purpose.COSIGN),
        note_text=note.sign(body, keys.operator_signer_key()),
        old_size=old,
        proof=merkle.consistency_proof(old, split),
    )
    services.ledger_seal_and_cosign()
    cp = services.checkpoint_latest()
    assert cp.size == n and services.checkpoint_is_final(cp)  # final by its cosignatures...
    fork = ForkEvidence.objects.get()  # ... yet a witness refused it
    assert (fork.witness, fork.kind) == (LAB, "split_view")
    assert (fork.conflicting_size, bytes(fork.conflicting_root)) == (n, bytes(cp.root_hash))
    return a, cp, fork


def _assert_rejected_by_fork(claim, a, cp, fork) -> None:
    assert claim.status == S.REJECTED, {n: c.outcome for n, c in checks(claim).items()}
    check = checks(claim)[f"procedure:{a.full_url}"]
    assert check.outcome == "fail"
    assert check.sentence.startswith("Forked checkpoint:")
    assert f"contradicted by fork evidence #{fork.pk}: witness {LAB}" in check.sentence
    b64root = base64.b64encode(bytes(cp.root_hash)).decode()
    assert f"refused size {cp.size} root {b64root}" in check.sentence
    evidence = check.evidence["checkpoint"]["fork_evidence"]
    assert evidence["id"] == fork.pk and evidence["witness"] == LAB
    assert (evidence["conflicting_size"], evidence["conflicting_root"]) == (cp.size, b64root)
    assert evidence["cosigned_size"] == cp.size
    assert evidence["cosigned_root"] == base64.b64encode(bytes(fork.cosigned_root)).decode()
    assert ClaimEvent.objects.get(claim=claim, new_status=S.REJECTED).reason.startswith(
        "Forked checkpoint"
    )
    assert not BilledAnchor.objects.filter(claim=claim, live=True).exists()


# --- (a) fork evidence against this node's own ledger ---------------------------------------------


@pytest.mark.django_db
def test_a_checkpoint_contradicted_by_fork_evidence_fails_the_procedure():
    kit = make_provider()
    a, cp, fork = _split_view_then_seal(kit)
    claim, _ = claim_for(kit, [a])
    _assert_rejected_by_fork(verified(claim), a, cp, fork)


@pytest.mark.django_db
def test_a_batch_rejects_every_claim_proven_only_by_a_contradicted_checkpoint():
    kit = make_provider()
    a, cp, fork = _split_view_then_seal(kit)
    claim, _ = claim_for(kit, [a])
    other, [b] = claim_for(kit, [anchor_procedure(procedure(), HOSPITAL, seal=False)])
    done = {c.pk: c for c in claim_verify_many(claim_ids=[claim.pk, other.pk])}
    _assert_rejected_by_fork(done[claim.pk], a, cp, fork)
    # The newest checkpoint is contradicted: the log itself is in question, every Procedure
    # fails, even one not sealed yet.
    assert done[other.pk].status == S.REJECTED
    assert checks(other)[f"procedure:{b.full_url}"].sentence.startswith("Forked checkpoint:")


@pytest.mark.django_db
def test_the_history_the_witness_cosigned_still_verifies():
    """Evidence against another tree does not hold back claims on the cosigned history."""
    kit = make_provider()
    claim, _ = claim_for(kit)
    assert verified(claim).status == S.VERIFIED
    cp = services.checkpoint_latest()
    other = CheckpointBody(settings.LEDGER_ORIGIN, cp.size, b"\x07" * 32).body()
    with pytest.raises(witness.SizeConflict):  # another tree of that size shown to LAB
        services.cosignature_request(
            member_key=MemberKey.objects.get(member__name=LAB, purpose=MemberKey.Purpose.COSIGN),
            note_text=note.sign(other, keys.operator_signer_key()),
            old_size=cp.size,
            proof=[],
        )
    assert bytes(ForkEvidence.objects.get().cosigned_root) == bytes(cp.root_hash)
    again, _ = claim_for(kit)
    assert verified(again).status == S.VERIFIED


# --- (b) against a mirror: this node's live server read as another node's log -------------------


@pytest.fixture
def mirrored(settings, live_server, transactional_db):
    """Claims verified through the live server's tlog-tiles, trusting only the log's key and
    the witnesses' keys; a fresh MirrorSource per test (each test has a new log)."""
    kit = make_provider()  # the ledger node: operator and member keys
    settings.LEDGER_MIRROR_URL = live_server.url
    settings.LEDGER_MIRROR_LOG_KEY = keys.operator_verifier_key()
    settings.LEDGER_MIRROR_WITNESS_KEYS = list(
        MemberKey.objects.filter(purpose=MemberKey.Purpose.COSIGN).values_list(
            "verifier_key", flat=True
        )
    )
    settings.LEDGER_MIRROR_CHECKPOINT_TTL_S = 0.0  # every claim reads the newest checkpoint
    settings.LEDGER_MIRROR_TIMEOUT_S = 2.0
    settings.LEDGER_QUORUM = 2
    mirror_source._SOURCES.clear()
    yield kit
    mirror_source._SOURCES.clear()


def _proof_checks_out(evidence: dict) -> None:
    """Anyone can recheck the inclusion from the evidence alone."""
    cp = evidence["checkpoint"]
    merkle.verify_inclusion(
        evidence["leaf_index"],
        cp["size"],
        base64.b64decode(evidence["leaf_hash"]),
        [base64.b64decode(h) for h in evidence["proof"]],
        base64.b64decode(cp["root_hash"]),
    )
    note.verify(cp["note"], [keys.operator_verifier_key()])


@pytest.mark.urls(URLS)
def test_a_claim_verified_against_a_mirror_says_where_its_proof_comes_from(mirrored, live_server):
    kit = mirrored
    claim, [a] = claim_for(kit)
    claim = verified(claim)
    assert claim.status == S.VERIFIED, {
        n: (c.outcome, c.sentence) for n, c in checks(claim).items()
    }
    check = checks(claim)[f"procedure:{a.full_url}"]
    assert check.outcome == "pass"
    assert check.evidence["source"] == live_server.url
    assert check.evidence["checkpoint"]["source"] == live_server.url
    assert f"of the mirror {live_server.url}" in check.sentence
    assert check.evidence["member"] == HOSPITAL
    assert len(check.evidence["checkpoint"]["cosigners"]) >= 2
    _proof_checks_out(check.evidence)
    assert checks(claim)["binding"].outcome == "pass"  # the leaf row built from the statement

    # A batch proves through the mirror too.
    second, [b] = claim_for(kit)
    third, [c] = claim_for(kit)
    done = claim_verify_many(claim_ids=[second.pk, third.pk])
    assert {x.status for x in done} == {S.VERIFIED}
    for x, anchored in ((second, b), (third, c)):
        evidence = checks(x)[f"procedure:{anchored.full_url}"].evidence
        assert evidence["source"] == live_server.url
        _proof_checks_out(evidence)


@pytest.mark.urls(URLS)
def test_an_unreachable_mirror_makes_the_claim_wait_not_fail(mirrored, settings):
    claim, anchored = claim_for(
        mirrored, [anchor_procedure(procedure()), anchor_procedure(procedure())]
    )
    settings.LEDGER_MIRROR_URL = "http://127.0.0.1:9/"  # discard port: nothing listens
    claim = verified(claim)
    assert claim.status == S.VERIFYING and claim.waiting_since is not None
    for a in anchored:
        check = checks(claim)[f"procedure:{a.full_url}"]
        assert check.outcome == "wait"
        assert "mirror could not be read" in check.sentence
        assert check.evidence["source"] == "http://127.0.0.1:9/"
    assert not ClaimEvent.objects.filter(claim=claim, new_status=S.REJECTED).exists()
    [done] = claim_verify_many(claim_ids=[claim.pk])  # the same in a batch
    assert done.status == S.VERIFYING
    assert {c.outcome for n, c in checks(claim).items() if n.startswith("procedure:")} == {"wait"}


@pytest.mark.urls(URLS)
def test_a_mirror_checkpoint_without_quorum_waits_then_verifies(mirrored, settings):
    kit = mirrored
    a = anchor_procedure(procedure(), seal=False)
    others = MemberKey.objects.filter(purpose=MemberKey.Purpose.COSIGN).exclude(
        member__name=HOSPITAL
    )
    down = list(others.values_list("pk", flat=True))
    MemberKey.objects.filter(pk__in=down).update(revoked_at=timezone.now())
    services.ledger_seal_and_cosign()  # one cosignature of the two the quorum needs
    claim, _ = claim_for(kit, [a])
    claim = verified(claim)
    assert claim.status == S.VERIFYING
    check = checks(claim)[f"procedure:{a.full_url}"]
    assert check.outcome == "wait" and "fewer than the quorum 2" in check.sentence

    MemberKey.objects.filter(pk__in=down).update(revoked_at=None)
    services.checkpoint_cosign(checkpoint=services.checkpoint_latest())
    assert verified(claim).status == S.VERIFIED


@pytest.mark.urls(URLS)
def test_a_wrong_salt_through_a_mirror_is_rejected(mirrored):
    a = anchor_procedure(procedure())
    a.salt = anchor.new_salt()
    claim, _ = claim_for(mirrored, [a])
    claim = verified(claim)
    assert claim.status == S.REJECTED
    check = checks(claim)[f"procedure:{a.full_url}"]
    assert check.outcome == "fail" and "wrong salt" in check.sentence
    assert check.evidence["leaf_commitment"] != check.evidence["commitment"]


@pytest.mark.urls(URLS)
def test_a_wrong_leaf_hash_through_a_mirror_is_rejected(mirrored):
    a = anchor_procedure(procedure())
    b = anchor_procedure(procedure())
    a.leaf_hash = b.leaf_hash  # another leaf's hash disclosed for a's index
    claim, _ = claim_for(mirrored, [a])
    claim = verified(claim)
    assert claim.status == S.REJECTED
    check = checks(claim)[f"procedure:{a.full_url}"]
    assert check.outcome == "fail" and "disclosed leaf hash" in check.sentence


@pytest.mark.urls(URLS)
def test_a_mirror_checkpoint_contradicted_by_fork_evidence_fails(mirrored):
    a, cp, fork = _split_view_then_seal(mirrored)
    claim, _ = claim_for(mirrored, [a])
    claim = verified(claim)
    _assert_rejected_by_fork(claim, a, cp, fork)
    assert checks(claim)[f"procedure:{a.full_url}"].evidence["source"]
