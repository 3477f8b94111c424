"""Fork evidence: a witness that refuses a log-signed checkpoint no proof joins to what it cosigned
keeps both checkpoints (ForkEvidence); the operator keeps a remote witness's such refusal; the
ledger page shows them in a red banner and the admin lists them, read only."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client

from ledger import forks, keys, merkle, note, services, tlog_witness, witness
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import AppendOnlyError, ForkEvidence, Leaf, Member, MemberKey, WitnessState
from tests.ledger.helpers import init_ledger, signed_anchor

HOSTED = "northlab.example"


def _seal(first: int, n: int):
    services.anchor_append_many(datas=[signed_anchor(i) for i in range(first, first + n)])
    return services.ledger_seal()


def _honest_hashes(n: int) -> list[bytes]:
    return [
        bytes(h) for h in Leaf.objects.order_by("index").values_list("leaf_hash", flat=True)[:n]
    ]


def _signed(settings, leaves: list[bytes]) -> str:
    body = CheckpointBody(settings.LEDGER_ORIGIN, len(leaves), merkle.root_hash(leaves)).body()
    return note.sign(body, keys.operator_signer_key())


def _fork_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"forked history %d" % i) for i in range(n)]


def _hosted_key() -> MemberKey:
    return MemberKey.objects.select_related("member").get(
        member__name=HOSTED, purpose=MemberKey.Purpose.COSIGN
    )


# --- a witness hosted on this node -------------------------------------------------------------


@pytest.mark.django_db
def test_a_hosted_witness_keeps_both_notes_of_a_fork_once(settings):
    init_ledger()
    cp5 = _seal(0, 5)
    assert services.checkpoint_cosign(checkpoint=cp5)[HOSTED] == "cosigned"
    state = WitnessState.objects.get(witness=HOSTED)
    assert state.note == cp5.note  # what it accepted, as the log signed it

    forked = _fork_of(12)  # the operator's key signs a tree of 12 that does not extend cp5
    forked_note = _signed(settings, forked)
    for _ in range(2):  # asked again (every beat): still one piece of evidence
        with pytest.raises(witness.BadProof):
            services.cosignature_request(
                member_key=_hosted_key(),
                note_text=forked_note,
                old_size=5,
                proof=merkle.consistency_proof(5, forked),
            )
    [fork] = ForkEvidence.objects.all()
    assert (fork.witness, fork.reported_by, fork.kind) == (HOSTED, "witness", "bad_proof")
    assert fork.origin == settings.LEDGER_ORIGIN
    assert (fork.cosigned_size, bytes(fork.cosigned_root)) == (5, bytes(cp5.root_hash))
    assert fork.cosigned_note == cp5.note
    assert (fork.conflicting_size, bytes(fork.conflicting_root)) == (12, merkle.root_hash(forked))
    assert fork.conflicting_note == forked_note
    assert fork.old_size == 5
    assert fork.proof == forks.proof_text(merkle.consistency_proof(5, forked))
    # Both notes verify with the log's key: the pair is evidence anyone can check.
    for text in (fork.cosigned_note, fork.conflicting_note):
        note.verify(text, [keys.operator_verifier_key()])
    # The witness did not move, and the honest next checkpoint is cosigned.
    assert WitnessState.objects.get(witness=HOSTED).size == 5
    cp9 = _seal(5, 4)
    assert services.checkpoint_cosign(checkpoint=cp9)[HOSTED] == "cosigned"
    assert ForkEvidence.objects.count() == 1


@pytest.mark.django_db
def test_a_split_view_of_the_same_size_is_evidence_a_mere_old_size_is_not(settings):
    init_ledger()
    cp5 = _seal(0, 5)
    services.checkpoint_cosign(checkpoint=cp5)
    with pytest.raises(witness.SizeConflict):  # the operator lost track: no fork
        services.cosignature_request(
            member_key=_hosted_key(), note_text=cp5.note, old_size=2, proof=[]
        )
    assert not ForkEvidence.objects.exists()
    other = _signed(settings, _fork_of(5))
    for old in (5, 3):  # whatever the old size, two trees of size 5
        with pytest.raises(witness.SizeConflict):
            services.cosignature_request(
                member_key=_hosted_key(), note_text=other, old_size=old, proof=[]
            )
    [fork] = ForkEvidence.objects.all()
    assert fork.kind == "split_view"
    assert (fork.cosigned_size, fork.cosigned_note) == (5, cp5.note)
    assert (fork.conflicting_size, fork.conflicting_note) == (5, other)


@pytest.mark.django_db
def test_evidence_is_append_only_and_an_old_state_has_no_note(settings):
    init_ledger()
    cp3 = _seal(0, 3)
    services.checkpoint_cosign(checkpoint=cp3)
    WitnessState.objects.filter(witness=HOSTED).update(note="")  # a row from before the note
    with pytest.raises(witness.BadProof):
        services.cosignature_request(
            member_key=_hosted_key(),
            note_text=_signed(settings, _fork_of(4)),
            old_size=3,
            proof=merkle.consistency_proof(3, _fork_of(4)),
        )
    fork = ForkEvidence.objects.get()
    assert fork.cosigned_note == "" and bytes(fork.cosigned_root) == bytes(cp3.root_hash)
    with pytest.raises(AppendOnlyError):
        ForkEvidence.objects.filter(pk=fork.pk).update(detail="nothing happened")
    with pytest.raises(AppendOnlyError):
        fork.delete()
    if connection.vendor == "postgresql":
        from django.db import DatabaseError, transaction

        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM ledger_forkevidence")


# --- this node as a witness over HTTP, and the operator's side -----------------------------------

pytest_urls = pytest.mark.urls("tests.consortium.urls")


@pytest.fixture
def http_acme(settings, live_server, transactional_db) -> str:
    """This node runs the log and, over HTTP through its live server, acme's witness."""
    init_ledger()
    name = "acme-insurance.example"
    Member.objects.filter(name=name).update(witness_url=live_server.url + "/")
    settings.LEDGER_WITNESS_NAME = name
    settings.LEDGER_WITNESS_LOGS = {settings.LEDGER_ORIGIN: keys.operator_verifier_key()}
    settings.LEDGER_WITNESS_TIMEOUT_S = 2.0
    settings.LEDGER_WITNESS_RETRIES = 0
    return name


@pytest_urls
def test_an_http_witness_keeps_both_notes_of_a_forked_checkpoint_once(settings, http_acme):
    cp5 = _seal(0, 5)
    assert services.checkpoint_cosign(checkpoint=cp5)[http_acme] == "cosigned"
    forked = _fork_of(12)
    forked_note = _signed(settings, forked)
    body = tlog_witness.format_request(5, merkle.consistency_proof(5, forked), forked_note)
    for _ in range(2):
        answer = Client().post("/add-checkpoint", data=body, content_type="text/plain")
        assert answer.status_code == 422
    [fork] = ForkEvidence.objects.all()
    assert (fork.witness, fork.reported_by, fork.kind) == (http_acme, "witness", "bad_proof")
    assert fork.cosigned_note == cp5.note
    assert fork.conflicting_note == forked_note
    assert (fork.cosigned_size, fork.conflicting_size) == (5, 12)


@pytest_urls
def test_the_operator_keeps_a_remote_witness_refusal_of_its_checkpoint(settings, http_acme):
    """Someone holding the log's key showed acme's witness another history of size 7; the
    operator's honest checkpoint 9 is refused (409 to size 7, then 422 on the proof from 7)."""
    cp5 = _seal(0, 5)
    services.checkpoint_cosign(checkpoint=cp5)
    split = _honest_hashes(5) + _fork_of(2)
    split_note = _signed(settings, split)
    answer = Client().post(
        "/add-checkpoint",
        data=tlog_witness.format_request(5, merkle.consistency_proof(5, split), split_note),
        content_type="text/plain",
    )
    assert answer.status_code == 200
    cp9 = _seal(5, 4)
    outcome = services.checkpoint_cosign(checkpoint=cp9)[http_acme]
    assert outcome.startswith("refused: ") and "422" in outcome
    # The witness and the operator share this database: one row, the witness's (both notes).
    [fork] = ForkEvidence.objects.all()
    assert fork.cosigned_note == split_note and fork.conflicting_note == cp9.note
    assert (fork.cosigned_size, fork.conflicting_size, fork.old_size) == (7, 9, 7)

    # The operator's own record, as on a node whose witness is elsewhere.
    refusal = witness.BadProof("422: the consistency proof does not hold")
    refusal.sent = (7, [b"\x01" * 32])
    services._record_reported_fork(
        MemberKey.objects.get(member__name=http_acme, purpose="cosign"), cp5, refusal
    )
    reported = ForkEvidence.objects.get(reported_by="operator")
    assert (reported.conflicting_size, reported.old_size, reported.cosigned_size) == (5, 7, 7)
    assert reported.cosigned_root is None and reported.cosigned_note == ""  # not ours to know
    assert reported.conflicting_note == cp5.note
    assert reported.proof == forks.proof_text([b"\x01" * 32])


# --- shown to operators ---------------------------------------------------------------------------


def _record(settings, **overrides) -> ForkEvidence:
    values = {
        "origin": settings.LEDGER_ORIGIN,
        "witness": HOSTED,
        "reported_by": ForkEvidence.Reporter.WITNESS,
        "kind": ForkEvidence.Kind.BAD_PROOF,
        "cosigned_size": 5,
        "cosigned_root": bytes(range(32)),
        "cosigned_note": "a\n5\nroot\n",
        "conflicting_size": 12,
        "conflicting_root": bytes(range(1, 33)),
        "conflicting_note": "a\n12\nother\n",
        "old_size": 5,
        "proof": [],
        "detail": "the consistency proof does not hold",
    }
    return forks.fork_record(**(values | overrides))


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


@pytest.mark.django_db
def test_the_ledger_page_shows_a_red_fork_banner_with_both_checkpoints(client, settings):
    init_ledger()
    page = client.get("/ledger/")
    assert 'data-testid="fork-banner"' not in page.content.decode()
    _record(settings)
    text = _text(client.get("/ledger/"))
    assert 'data-testid="fork-banner"' in text and 'role="alert"' in text
    assert "Fork detected:" in text
    assert (
        'cosigned size 5 (root <span class="hash">AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='
        in text
    )
    assert (
        'refused size 12 (root <span class="hash">AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA='
        in text
    )
    assert 'href="/admin/ledger/forkevidence/"' in text


@pytest.mark.django_db
def test_the_admin_lists_fork_evidence_read_only(admin_client, settings):
    init_ledger()
    fork = _record(settings, cosigned_root=None)
    listing = admin_client.get("/admin/ledger/forkevidence/")
    assert listing.status_code == 200
    assert "unknown" in listing.content.decode()  # a root the operator cannot know
    detail = admin_client.get(f"/admin/ledger/forkevidence/{fork.pk}/change/")
    assert detail.status_code == 200 and "other" in detail.content.decode()
    assert admin_client.get("/admin/ledger/forkevidence/add/").status_code == 403
    assert admin_client.post(f"/admin/ledger/forkevidence/{fork.pk}/delete/").status_code == 403


# --- for verifiers: checkpoint_contradicted -------------------------------------------------------


@pytest.mark.django_db
def test_a_tree_the_witness_refused_is_contradicted_and_the_cosigned_history_is_not(settings):
    init_ledger()
    cp5 = _seal(0, 5)
    assert services.checkpoint_cosign(checkpoint=cp5)[HOSTED] == "cosigned"
    origin, honest5 = settings.LEDGER_ORIGIN, bytes(cp5.root_hash)
    assert forks.checkpoint_contradicted(origin, 5, honest5) is None  # no evidence at all

    forked = _fork_of(12)
    with pytest.raises(witness.BadProof):
        services.cosignature_request(
            member_key=_hosted_key(),
            note_text=_signed(settings, forked),
            old_size=5,
            proof=merkle.consistency_proof(5, forked),
        )
    split5 = merkle.root_hash(_fork_of(5))
    fork = ForkEvidence.objects.get()
    # The refused tree, and any other tree of the size the witness cosigned, are contradicted.
    assert forks.checkpoint_contradicted(origin, 12, merkle.root_hash(forked)) == fork
    assert forks.checkpoint_contradicted(origin, 5, split5) == fork
    # The history the witness cosigned, and its honest extension, are not; nor another log.
    assert forks.checkpoint_contradicted(origin, 5, honest5) is None
    cp9 = _seal(5, 4)
    assert services.checkpoint_cosign(checkpoint=cp9)[HOSTED] == "cosigned"
    assert forks.checkpoint_contradicted(origin, 9, bytes(cp9.root_hash)) is None
    assert forks.checkpoint_contradicted("other.example", 12, merkle.root_hash(forked)) is None
    # Many at once, one query.
    trees = [(12, merkle.root_hash(forked)), (5, honest5), (9, bytes(cp9.root_hash)), (5, split5)]
    assert forks.checkpoints_contradicted(origin, trees) == {
        (12, merkle.root_hash(forked)): fork,
        (5, split5): fork,
    }


@pytest.mark.django_db
def test_a_remote_witness_refusal_counts_only_when_asked_for(settings):
    init_ledger()
    cp = _seal(0, 3)
    root = bytes(cp.root_hash)
    forks.fork_record(
        origin=settings.LEDGER_ORIGIN,
        witness="remote.example",
        reported_by=ForkEvidence.Reporter.OPERATOR,
        kind=ForkEvidence.Kind.SPLIT_VIEW,
        cosigned_size=3,
        cosigned_root=None,
        cosigned_note="",
        conflicting_size=3,
        conflicting_root=root,
        conflicting_note=cp.note,
        old_size=0,
        proof=[],
        detail="409 with our own size",
    )
    # The witness's word alone (no note of the other tree) does not contradict our checkpoint...
    assert forks.checkpoint_contradicted(settings.LEDGER_ORIGIN, 3, root) is None
    # ... unless the caller chooses to trust the reporting witnesses.
    reported = forks.checkpoint_contradicted(settings.LEDGER_ORIGIN, 3, root, include_reported=True)
    assert reported is not None and reported.witness == "remote.example"
