"""The audit trail is chained at each seal, its head anchored as one ledger leaf per seal, and
the verification says so; claim transitions are in it."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import rfc8785
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.chain import audit_chain
from audit.models import AuditEntry, ChainAnchor
from audit.verify import audit_verify
from ledger import anchor, keys, merkle, note, proofs, services
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Leaf
from tests.audit import helpers as h

pytestmark = pytest.mark.django_db


def test_entries_are_pending_until_a_seal_chains_them():
    h.node()
    entries = h.record(3)
    assert all(e.seq is None and e.hash is None for e in entries)
    assert not AuditEntry.objects.filter(seq__isnull=False).exists()

    services.ledger_seal()

    rows = h.chained_rows()
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert [r["id"] for r in rows] == [e.pk for e in entries]  # chained in the order written
    prev = bytes(32)
    for row in rows:  # recomputed from the document, not with audit.chain
        prev = h.independent_hash(prev, row)
        assert bytes(row["hash"]) == prev


def test_one_seal_anchors_the_head_as_one_leaf_included_in_its_checkpoint():
    h.node()
    before = Leaf.objects.count()
    h.record(25)

    checkpoint = services.ledger_seal()

    assert Leaf.objects.count() == before + 1  # one leaf per seal, not one per entry
    head = ChainAnchor.objects.get()
    assert (head.seq, head.member) == (25, "acme-insurance.example")
    assert bytes(head.head) == bytes(AuditEntry.objects.get(seq=25).hash)
    data = bytes(Leaf.objects.get(index=head.leaf_index).data)
    statement = anchor.statement_parse(data)
    expected = hashlib.sha256(
        b"claimproof-audit-head/v1\n" + rfc8785.dumps({"head": bytes(head.head).hex(), "seq": 25})
    ).digest()
    assert statement.commitment == expected
    assert statement.member == "acme-insurance.example"
    # the leaf is in the checkpoint this very seal signed
    assert checkpoint.size == head.leaf_index + 1
    body = CheckpointBody.parse(note.verify(checkpoint.note, [keys.operator_verifier_key()]).text)
    path = proofs.inclusion(head.leaf_index, checkpoint.size, sealed_size=checkpoint.size)
    merkle.verify_inclusion(
        head.leaf_index, checkpoint.size, merkle.leaf_hash(data), path, body.root_hash
    )


def test_a_seal_with_nothing_new_adds_no_leaf():
    h.node()
    h.record(2)
    services.ledger_seal()
    size = Leaf.objects.count()
    assert services.ledger_seal() is None
    assert audit_chain() is None
    assert Leaf.objects.count() == size
    assert ChainAnchor.objects.count() == 1


def test_the_chain_continues_across_seals():
    h.two_anchor_trail()
    rows = h.chained_rows()
    assert [r["seq"] for r in rows] == list(range(1, 9))
    prev = bytes(32)
    for row in rows:
        prev = h.independent_hash(prev, row)
        assert bytes(row["hash"]) == prev
    assert list(ChainAnchor.objects.values_list("seq", flat=True)) == [6, 8]


def test_verification_passes_on_an_honest_trail_and_counts_pending_entries():
    h.two_anchor_trail()
    h.record(2)  # written after the last seal

    report = audit_verify()

    assert report.ok, report.problems
    assert (report.entries, report.anchors, report.pending) == (8, 2, 2)
    assert (report.head_seq, report.anchored_seq) == (8, 8)
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "AUDIT TRAIL OK: entries #1 to #8 are anchored and unaltered" in out.getvalue()
    assert "2 entries pending" in out.getvalue()


def test_without_an_anchor_key_entries_are_chained_and_anchored_once_a_key_is_there(settings):
    h.node()
    member = settings.AUDIT_ANCHOR_MEMBER
    settings.AUDIT_ANCHOR_MEMBER = "nobody.example"  # this node holds no such key
    h.record(2)
    services.ledger_seal()
    assert AuditEntry.objects.filter(seq__isnull=False).count() == 2
    assert not ChainAnchor.objects.exists()
    report = audit_verify()
    assert report.ok and (report.head_seq, report.anchored_seq, report.unanchored) == (2, 0, 2)

    settings.AUDIT_ANCHOR_MEMBER = member
    services.ledger_seal()  # no new entry, but an unanchored head
    assert ChainAnchor.objects.get().seq == 2
    assert audit_verify().anchored_seq == 2


def test_an_entry_whose_data_has_no_canonical_json_is_refused_when_written():
    from audit.services import audit_record

    with pytest.raises(ValueError, match="canonical JSON"):
        audit_record(actor=None, action="x", target="y", data={"n": 2**60})


def test_claim_transitions_are_in_the_trail_one_statement_more():
    from claims.states import ClaimStatus, claim_transition
    from tests.review import factories as rf

    claim = rf.decidable_claim()
    target = f"claim:{claim.public_id}"
    steps = list(
        AuditEntry.objects.filter(target=target, action="claim.status")
        .order_by("id")
        .values_list("data", "why")
    )
    assert [(d["from"], d["to"]) for d, _ in steps] == [
        ("received", "verifying"),
        ("verifying", "verified"),
    ]
    assert steps[-1][1] == "every check passed"
    assert steps[-1][0]["snapshot"]["checks"]  # the verdict's evidence, by check

    user = rf.user_with(rf.Role.ADJUSTER)
    with CaptureQueriesContext(connection) as queries:
        claim_transition(claim=claim, to=ClaimStatus.INFO_REQUESTED, actor=user, reason="why?")
    writes = [q["sql"].split()[0] for q in queries.captured_queries]
    assert writes == ["UPDATE", "INSERT", "INSERT"]  # the claim, its event, its audit entry
    entry = AuditEntry.objects.filter(target=target).latest("id")
    assert (entry.actor, entry.actor_label, entry.why) == (user, user.username, "why?")
    assert entry.data == {"from": "verified", "to": "info_requested"}


def test_the_page_data_survives_a_json_round_trip_exactly():
    """What is hashed is what the database gives back: jsonb's own normal form."""
    h.node()
    h.record(1, data={"b": 1.0, "a": [1, "x"], "z": {"y": None}})
    services.ledger_seal()
    row = h.chained_rows()[0]
    assert json.loads(rfc8785.dumps(row["data"])) == {"a": [1, "x"], "b": 1, "z": {"y": None}}
    assert audit_verify().ok


def test_an_anchor_not_sealed_yet_is_reported_as_such_not_as_a_problem():
    h.node()
    h.record(2)
    audit_chain()  # chained and anchored; the checkpoint comes with the next seal
    report = audit_verify()
    assert report.ok, report.problems
    assert (report.anchors_unsealed, report.anchored_seq, report.unanchored) == (1, 0, 2)
    services.ledger_seal()
    report = audit_verify()
    assert (report.anchors, report.anchors_unsealed, report.anchored_seq) == (1, 0, 2)


def test_anchors_are_checked_batch_by_batch(monkeypatch):
    from audit import verify

    h.node()
    for n in range(1, 6):
        h.record(n)
        services.ledger_seal()
    monkeypatch.setattr(verify, "ANCHOR_BATCH", 2)
    report = audit_verify()
    assert report.ok, report.problems
    assert (report.entries, report.anchors, report.anchored_seq) == (15, 5, 15)


def test_a_failing_chain_step_never_stops_the_seal(monkeypatch, caplog):
    from audit import chain
    from tests.ledger.helpers import signed_anchor

    h.node()
    h.record(2)
    services.anchor_append(data=signed_anchor(7))

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chain, "audit_chain", broken)
    checkpoint = services.ledger_seal()
    assert checkpoint is not None and checkpoint.size == 1  # the procedure's leaf is sealed
    assert "the audit trail could not be chained at this seal" in caplog.text
    assert AuditEntry.objects.filter(seq__isnull=True).count() == 2  # still pending
    monkeypatch.undo()
    services.ledger_seal()
    assert AuditEntry.objects.filter(seq__isnull=True).count() == 0
