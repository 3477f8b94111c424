"""Sealing integrates pending leaves into a signed checkpoint that a quorum of witnesses cosigns."""

import pytest
from django.core.management import call_command

from ledger import keys, merkle, note, proofs, services
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, Leaf, MemberKey
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = pytest.mark.django_db


def _append(n_from: int, n_to: int) -> list[bytes]:
    datas = [signed_anchor(n) for n in range(n_from, n_to)]
    for data in datas:
        services.anchor_append(data=data)
    return datas


def test_a_seal_signs_a_checkpoint_of_every_pending_leaf(settings):
    init_ledger()
    datas = _append(0, 13)
    cp = services.ledger_seal()
    body = CheckpointBody.parse(note.verify(cp.note, [keys.operator_verifier_key()]).text)
    assert body.origin == settings.LEDGER_ORIGIN
    assert body.size == 13
    assert body.root_hash == merkle.root_hash([merkle.leaf_hash(d) for d in datas])


def test_nothing_pending_means_no_new_checkpoint():
    init_ledger()
    _append(0, 3)
    assert services.ledger_seal() is not None
    assert services.ledger_seal() is None
    assert list(Checkpoint.objects.values_list("size", flat=True)) == [3, 0]


def test_seals_in_batches_keep_the_tree_identical_to_one_big_seal():
    init_ledger()
    datas = _append(0, 40)
    sizes = []
    while (cp := services.ledger_seal(max_leaves=9)) is not None:
        sizes.append(cp.size)
    assert sizes == [9, 18, 27, 36, 40]
    expected = merkle.root_hash([merkle.leaf_hash(d) for d in datas])
    assert bytes(Checkpoint.objects.get(size=40).root_hash) == expected


def test_leaves_appended_between_seals_prove_against_every_later_checkpoint():
    init_ledger()
    datas = _append(0, 5)
    services.ledger_seal()
    datas += _append(5, 12)
    services.ledger_seal()
    hashes = [merkle.leaf_hash(d) for d in datas]
    for size in (5, 12):
        root = bytes(Checkpoint.objects.get(size=size).root_hash)
        for index in range(size):
            reader = proofs.HashReader()
            proof = proofs.inclusion(index, size, sealed_size=12, reader=reader)
            merkle.verify_inclusion(index, size, hashes[index], proof, root)
    proof = proofs.consistency(5, 12, sealed_size=12)
    merkle.verify_consistency(
        5,
        12,
        bytes(Checkpoint.objects.get(size=5).root_hash),
        bytes(Checkpoint.objects.get(size=12).root_hash),
        proof,
    )


def test_checkpoint_is_final_once_a_quorum_of_witnesses_cosigned(settings):
    settings.LEDGER_QUORUM = 2
    init_ledger()
    _append(0, 4)
    cp = services.ledger_seal()
    assert not services.checkpoint_is_final(cp)
    outcomes = services.checkpoint_cosign(checkpoint=cp)
    assert outcomes == {
        "acme-insurance.example": "cosigned",
        "northlab.example": "cosigned",
        "stmarys.example": "cosigned",
    }
    assert services.checkpoint_is_final(cp)
    text = services.checkpoint_text(cp)
    cosign_keys = MemberKey.objects.filter(purpose="cosign").values_list("verifier_key", flat=True)
    assert set(note.verify_cosignature(text, list(cosign_keys))) == set(outcomes)
    assert note.verify(text, [keys.operator_verifier_key()]).text == note.split_note(cp.note)[0]


def test_a_witness_without_its_key_stays_out_and_the_quorum_still_forms(settings):
    settings.LEDGER_QUORUM = 2
    init_ledger()
    (keys.witnesses_dir() / "northlab.example.key").rename(keys.witnesses_dir() / "away.bak")
    try:
        _append(0, 3)
        cp = services.ledger_seal()
        outcomes = services.checkpoint_cosign(checkpoint=cp)
        assert outcomes["northlab.example"].startswith("refused")
        assert services.checkpoint_is_final(cp)
        assert cp.cosignatures.count() == 2
    finally:
        (keys.witnesses_dir() / "away.bak").rename(keys.witnesses_dir() / "northlab.example.key")
    # Back online, the late witness catches up from where it stood on the next checkpoint.
    _append(3, 5)
    cp2 = services.ledger_seal()
    assert services.checkpoint_cosign(checkpoint=cp2)["northlab.example"] == "cosigned"


def test_fewer_witnesses_than_the_quorum_leave_the_checkpoint_not_final(settings):
    settings.LEDGER_QUORUM = 3
    init_ledger()
    MemberKey.objects.filter(member__name="stmarys.example", purpose="cosign").update(
        revoked_at="2026-01-01T00:00:00Z"
    )
    _append(0, 2)
    cp = services.ledger_seal()
    services.checkpoint_cosign(checkpoint=cp)
    assert cp.cosignatures.count() == 2
    assert not services.checkpoint_is_final(cp)


def test_the_log_refuses_to_seal_over_a_gap():
    init_ledger()
    _append(0, 3)
    Leaf.objects.bulk_create(
        [
            Leaf(
                index=7,
                leaf_hash=b"\x07" * 32,
                commitment=b"\x07" * 32,
                member=Leaf.objects.first().member,
                data=b"{}",
                received_at=Leaf.objects.first().received_at,
            )
        ]
    )
    with pytest.raises(RuntimeError, match="gap"):
        services.ledger_seal()


def test_seal_task_command_path_via_ledger_demo_makes_a_final_checkpoint():
    init_ledger()
    call_command("ledger_demo", anchors=4, batches=2, stdout=None)
    cp = services.checkpoint_latest()
    assert cp.size == 12
    assert services.checkpoint_is_final(cp)
