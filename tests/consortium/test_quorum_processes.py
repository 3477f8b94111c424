"""Quorum k = 2 of n = 3 witnesses, each its own node process on 127.0.0.1; crashes mid-request.

The log operator is this test process; the hosted witnesses of ``ledger_init`` are revoked so the
three remote processes are the only witnesses.
"""

from __future__ import annotations

import itertools
import threading

import pytest
from django.utils import timezone

from claims.checks import WAIT
from claims.states import ClaimStatus
from ledger import keys, merkle, note, proofs, services, tlog_witness, witness_client
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Member, MemberKey
from tests.claims.factories import checks, claim_for, make_provider, verified
from tests.consortium.conftest import WitnessNode
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
_names = itertools.count(1)
_anchors = itertools.count(10_000)


def _witness(settings, node_database: str, nodes: list[WitnessNode]) -> WitnessNode:
    """A member whose witness is a node process of its own (one gunicorn worker; not started)."""
    name = f"quorum-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    node = WitnessNode(
        database_url=node_database,
        name=name,
        signer_key=signer,
        logs={settings.LEDGER_ORIGIN: keys.operator_verifier_key()},
        workers=1,
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


def _only_remote_witnesses() -> None:
    MemberKey.objects.filter(
        purpose=MemberKey.Purpose.COSIGN, member__witness_url__isnull=True
    ).update(revoked_at=timezone.now(), revocation_reason="test: only remote witnesses")
    MemberKey.objects.filter(purpose=MemberKey.Purpose.COSIGN, member__witness_url="").update(
        revoked_at=timezone.now(), revocation_reason="test: only remote witnesses"
    )


def _seal(n: int):
    services.anchor_append_many(datas=[signed_anchor(next(_anchors)) for _ in range(n)])
    return services.ledger_seal()


@pytest.fixture
def fast_client(settings):
    settings.LEDGER_WITNESS_TIMEOUT_S = 2.0
    settings.LEDGER_WITNESS_RETRIES = 1
    settings.LEDGER_WITNESS_BACKOFF_S = 0.05


def test_two_of_three_witness_processes_make_final_and_fewer_make_claims_wait(
    settings, client, fast_client, node_database, witness_nodes
):
    settings.LEDGER_QUORUM = 2
    init_ledger()
    _only_remote_witnesses()
    a, b, c = (_witness(settings, node_database, witness_nodes) for _ in range(3))
    a.start()
    b.start()

    # One witness down: still final with k = 2 up.
    cp = _seal(4)
    outcomes = services.checkpoint_cosign(checkpoint=cp)
    assert outcomes[a.name] == outcomes[b.name] == "cosigned", (a.log_tail(), b.log_tail())
    assert outcomes[c.name].startswith("refused: ")
    assert services.checkpoint_is_final(cp)

    # The late witness comes up and is asked again (what the next beat does): it catches up
    # from size 0 and cosigns the same checkpoint.
    c.start()
    assert services.checkpoint_cosign(checkpoint=cp)[c.name] == "cosigned", c.log_tail()
    assert cp.cosignatures.count() == 3

    # Two down, fewer than k: the next checkpoint stays non-final and a claim whose procedure
    # is only in it waits in verification; the ledger page says why.
    b.stop()
    c.stop()
    kit = make_provider()
    claim, anchored = claim_for(kit)  # anchors, seals and gathers cosignatures: only A answers
    latest = services.checkpoint_latest()
    assert anchored[0].leaf_index < latest.size
    assert not services.checkpoint_is_final(latest)
    claim = verified(claim)
    assert claim.status == ClaimStatus.VERIFYING
    assert claim.waiting_since is not None
    waiting = [c for c in checks(claim).values() if c.outcome == WAIT]
    assert len(waiting) == 1
    assert "waiting for the quorum" in waiting[0].sentence
    assert f"1 of the {settings.LEDGER_QUORUM} cosignatures" in waiting[0].sentence
    page = client.get("/ledger/").content.decode()
    assert "NOT FINAL" in page
    assert "Not final: 1 of 3 witnesses cosigned; quorum is 2." in page

    # One comes back: the beat gathers its cosignature, the checkpoint is final, the claim's
    # procedure is proven (whatever the business rules then say, it no longer waits).
    b.start()
    services.ledger_seal_and_cosign()  # may seal more first (the audit trail anchors its head)
    newest = services.checkpoint_latest()
    assert newest.size >= latest.size
    assert services.checkpoint_is_final(newest), newest.cosignatures.count()
    claim = verified(claim)
    assert claim.status in {ClaimStatus.VERIFIED, ClaimStatus.NEEDS_REVIEW}
    assert claim.waiting_since is None
    assert not [c for c in checks(claim).values() if c.outcome == WAIT]


def _ask(url: str, old_size: int, proof: list[bytes], note_text: str):
    body = tlog_witness.format_request(old_size, proof, note_text)
    return witness_client.post(witness_client.add_checkpoint_url(url), body, timeout=10)


def test_a_witness_killed_mid_request_loses_nothing_and_never_cosigns_inconsistently(
    settings, fast_client, node_database, witness_nodes
):
    init_ledger()
    node = _witness(settings, node_database, witness_nodes)
    node.start()
    cp = _seal(3)
    assert services.checkpoint_cosign(checkpoint=cp)[node.name] == "cosigned", node.log_tail()
    vkey = MemberKey.objects.get(member__name=node.name).verifier_key
    cosigned_size = cp.size
    # SIGKILL while an add-checkpoint is in flight, at a few points of its life: whatever it
    # answered before dying, after a restart it is at a size it cosigned, and never cosigns
    # another tree of that size.
    for delay in (0.0, 0.002, 0.02):
        cp = _seal(2)
        proof = proofs.consistency(cosigned_size, cp.size, sealed_size=cp.size)
        answers: list = []
        sender = threading.Thread(
            target=_record, args=(answers, node.url, cosigned_size, proof, cp.note)
        )
        sender.start()
        threading.Event().wait(delay)
        node.kill()
        sender.join(timeout=15)
        assert not sender.is_alive()
        answered = answers[0]
        cosigned_here = (
            not isinstance(answered, Exception)
            and answered.status == 200
            and node.name
            in note.verify_cosignature(
                note.add_signatures(cp.note, tlog_witness.parse_cosignatures(answered.body)),
                [vkey],
            )
        )
        node.start()
        # Where it stands now: asked from 0, it answers 409 with the size it last cosigned.
        where = _ask(node.url, 0, [], cp.note)
        assert where.status == 409, where
        now_at = tlog_witness.parse_size(where.body)
        if cosigned_here:
            assert now_at == cp.size  # a cosignature it gave is never forgotten
        assert now_at in {cosigned_size, cp.size}
        # Another tree of the size it stands at (a split view) is refused.
        forked = [merkle.leaf_hash(b"split %d" % i) for i in range(now_at)]
        split = note.sign(
            CheckpointBody(settings.LEDGER_ORIGIN, now_at, merkle.root_hash(forked)).body(),
            keys.operator_signer_key(),
        )
        assert _ask(node.url, now_at, [], split).status == 409
        # The operator's beat catches it up to the honest checkpoint either way.
        assert services.checkpoint_cosign(checkpoint=cp)[node.name] in {
            "cosigned",
            "already cosigned",
        }, node.log_tail()
        cosigned_size = cp.size


def _record(answers: list, *args) -> None:
    try:
        answers.append(_ask(*args))
    except Exception as exc:  # a killed server: any network fault is an answer here
        answers.append(exc)
