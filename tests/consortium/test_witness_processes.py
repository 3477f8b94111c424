"""The log operator (this test process) and witnesses running as separate node processes."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from ledger import keys, merkle, note, services, witness, witness_client
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import ForkEvidence, Leaf, Member, MemberKey
from tests.consortium.conftest import WitnessNode
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
_names = itertools.count(1)
_anchors = itertools.count(1)


def _remote_witness(settings, node_database: str, nodes: list[WitnessNode]) -> WitnessNode:
    """A new member whose witness runs in its own process (not started yet)."""
    name = f"remote-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    node = WitnessNode(
        database_url=node_database,
        name=name,
        signer_key=signer,
        logs={settings.LEDGER_ORIGIN: keys.operator_verifier_key()},
    )
    nodes.append(node)
    member = Member.objects.create(name=name, witness_url=node.url)
    MemberKey.objects.create(
        member=member,
        purpose=MemberKey.Purpose.COSIGN,
        verifier_key=verifier,
        key_id=f"{note.parse_verifier_key(verifier).key_id:08x}",
    )
    return node


def _seal(n: int):
    services.anchor_append_many(datas=[signed_anchor(next(_anchors)) for _ in range(n)])
    return services.ledger_seal()


@pytest.fixture
def fast_client(settings):
    settings.LEDGER_WITNESS_TIMEOUT_S = 2.0
    settings.LEDGER_WITNESS_RETRIES = 1
    settings.LEDGER_WITNESS_BACKOFF_S = 0.1


def test_a_witness_process_cosigns_survives_a_restart_and_refuses_a_fork(
    settings, fast_client, node_database, witness_nodes
):
    settings.LEDGER_QUORUM = 4  # the three hosted witnesses and the remote one
    init_ledger()
    node = _remote_witness(settings, node_database, witness_nodes)
    node.start()
    cp = _seal(5)
    outcomes = services.checkpoint_cosign(checkpoint=cp)
    assert outcomes[node.name] == "cosigned", node.log_tail()
    assert services.checkpoint_is_final(cp)
    text = services.checkpoint_text(cp)
    assert node.name in note.verify_cosignature(
        text, [MemberKey.objects.get(member__name=node.name).verifier_key]
    )

    node.stop()  # restarted between two checkpoints: its state is in its database
    node.start()
    cp = _seal(4)
    assert services.checkpoint_cosign(checkpoint=cp)[node.name] == "cosigned", node.log_tail()
    assert services.checkpoint_is_final(cp)

    # A fork: the operator's key signs another tree of 12 leaves that does not extend size 9.
    forked = [merkle.leaf_hash(b"fork %d" % i) for i in range(12)]
    body = CheckpointBody(settings.LEDGER_ORIGIN, 12, merkle.root_hash(forked)).body()
    forked_note = note.sign(body, keys.operator_signer_key())
    with pytest.raises(witness.BadProof):
        witness_client.request_cosignatures(
            node.url,
            old_size=9,
            proof=merkle.consistency_proof(9, forked),
            note_text=forked_note,
            timeout=2.0,
            retries=0,
            backoff=0.1,
        )
    # Still at 9 with the honest root: the honest next checkpoint is cosigned.
    cp = _seal(3)
    assert services.checkpoint_cosign(checkpoint=cp)[node.name] == "cosigned", node.log_tail()


def test_a_witness_that_is_down_is_skipped_then_cosigns_when_it_is_back(
    settings, fast_client, node_database, witness_nodes
):
    settings.LEDGER_QUORUM = 2
    init_ledger()
    node = _remote_witness(settings, node_database, witness_nodes)  # not started: down
    cp = _seal(3)
    outcomes = services.checkpoint_cosign(checkpoint=cp)
    assert outcomes[node.name].startswith("refused: ")
    assert not cp.cosignatures.filter(member__name=node.name).exists()
    assert services.checkpoint_is_final(cp)  # the hosted witnesses make the quorum
    settings.LEDGER_QUORUM = 4
    assert not services.checkpoint_is_final(cp)  # fewer than k: not final

    node.start()
    # The beat asks again for the latest checkpoint: the late witness catches up from 0.
    assert services.checkpoint_cosign(checkpoint=cp)[node.name] == "cosigned", node.log_tail()
    assert services.checkpoint_is_final(cp)
    cp = _seal(2)
    assert services.checkpoint_cosign(checkpoint=cp)[node.name] == "cosigned"
    assert services.checkpoint_is_final(cp)


def _node_forks(node_database: str, witness_name: str) -> list[tuple]:
    with psycopg.connect(node_database) as conn:
        return conn.execute(
            "SELECT kind, cosigned_size, cosigned_note, conflicting_size, conflicting_note "
            "FROM ledger_forkevidence WHERE witness = %s ORDER BY id",
            [witness_name],
        ).fetchall()


def test_a_witness_process_and_the_operator_each_keep_fork_evidence(
    settings, fast_client, node_database, witness_nodes
):
    settings.LEDGER_QUORUM = 4
    init_ledger()
    node = _remote_witness(settings, node_database, witness_nodes)
    node.start()
    cp5 = _seal(5)
    assert services.checkpoint_cosign(checkpoint=cp5)[node.name] == "cosigned", node.log_tail()

    # The operator's key signs a tree of 12 that does not extend 5: sent twice, kept once.
    forked = [merkle.leaf_hash(b"fork %d" % i) for i in range(12)]
    forked_note = note.sign(
        CheckpointBody(settings.LEDGER_ORIGIN, 12, merkle.root_hash(forked)).body(),
        keys.operator_signer_key(),
    )
    for _ in range(2):
        with pytest.raises(witness.BadProof):
            witness_client.request_cosignatures(
                node.url,
                old_size=5,
                proof=merkle.consistency_proof(5, forked),
                note_text=forked_note,
                timeout=2.0,
                retries=0,
                backoff=0.1,
            )
    assert _node_forks(node_database, node.name) == [("bad_proof", 5, cp5.note, 12, forked_note)], (
        node.log_tail()
    )

    # A split view: the node is shown another size 7 extending 5, then refuses the honest 9.
    honest = [bytes(h) for h in Leaf.objects.order_by("index").values_list("leaf_hash", flat=True)]
    split = honest[:5] + [merkle.leaf_hash(b"split %d" % i) for i in range(2)]
    split_note = note.sign(
        CheckpointBody(settings.LEDGER_ORIGIN, 7, merkle.root_hash(split)).body(),
        keys.operator_signer_key(),
    )
    witness_client.request_cosignatures(
        node.url,
        old_size=5,
        proof=merkle.consistency_proof(5, split),
        note_text=split_note,
        timeout=2.0,
        retries=0,
        backoff=0.1,
    )
    cp9 = _seal(4)
    assert services.checkpoint_cosign(checkpoint=cp9)[node.name].startswith("refused: 422")
    assert not services.checkpoint_is_final(cp9)
    [reported] = ForkEvidence.objects.filter(witness=node.name)  # the operator's database
    assert (reported.reported_by, reported.kind) == ("operator", "bad_proof")
    assert (reported.old_size, reported.conflicting_size) == (7, 9)
    assert reported.conflicting_note == cp9.note
    assert _node_forks(node_database, node.name)[1] == ("bad_proof", 7, split_note, 9, cp9.note)
