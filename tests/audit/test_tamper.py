"""Every alteration of the trail behind the application's back is caught, and the first bad entry
is named; the database itself refuses the alterations on PostgreSQL."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from audit.models import AppendOnlyError, AuditEntry, ChainAnchor
from audit.verify import audit_verify
from tests.audit import helpers as h

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail():
    h.two_anchor_trail()
    assert audit_verify().ok


def _caught(expected: str) -> str:
    report = audit_verify()
    assert not report.ok
    assert expected in report.first_problem, report.problems
    err = io.StringIO()
    with pytest.raises(CommandError, match="AUDIT TRAIL MISMATCH"):
        call_command("audit_verify", stdout=io.StringIO(), stderr=err)
    assert f"first bad entry: {report.first_problem}" in err.getvalue()
    return report.first_problem


def _set(seq: int, column: str, value) -> None:
    with h.tampering() as cursor:
        sql = f"UPDATE audit_auditentry SET {column} = %s WHERE seq = %s"  # noqa: S608 (a test)
        cursor.execute(sql, [value, seq])


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("why", "a better-sounding reason"),
        ("data", json.dumps({"approval": 1, "amount": "1050.00", "note": "é ✓"})),
        ("actor_label", "someone-else"),
        ("action", "claim.release"),
        ("target", "claim:00000000-0000-0000-0000-000000000009"),
    ],
)
def test_a_changed_field_is_caught_at_its_entry(trail, column, value):
    _set(2, column, value)
    assert "entry #2 " in _caught("its hash does not match its recorded fields")


def test_a_changed_actor_is_caught(trail):
    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_auditentry SET actor_id = NULL WHERE seq = 3")
    assert "entry #3 " in _caught("was altered")


def test_a_changed_time_is_caught(trail):
    with h.tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditentry SET at = at - interval '1 hour' WHERE seq = 5"
            if connection.vendor == "postgresql"
            else "UPDATE audit_auditentry SET at = '2020-01-01 00:00:00' WHERE seq = 5"
        )
    assert "entry #5 " in _caught("was altered")


def test_a_deleted_entry_is_caught(trail):
    with h.tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq = 4")
    _caught("entry #4 is missing (deleted?): the next chained entry is #5")


def test_deleted_entries_at_the_end_are_caught_by_their_anchor(trail):
    with h.tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq >= 7")
    _caught("the anchor of entry #8 (ledger leaf")


def test_an_inserted_entry_is_caught(trail):
    """A forged entry slipped in at #4 (the rest renumbered), with a well-formed hash."""
    rows = h.chained_rows()
    with h.tampering() as cursor:
        for row in reversed(rows[3:]):
            cursor.execute("UPDATE audit_auditentry SET seq = seq + 1 WHERE id = %s", [row["id"]])
        forged = AuditEntry(
            at=rows[2]["at"],
            actor_label="nobody",
            action="claim.approve",
            target="claim:x",
            why="forged",
            data={},
        )
        forged.save()
        fake = h.independent_hash(
            bytes(rows[2]["hash"]),
            {**h.chained_rows()[0], **forged.__dict__, "seq": 4, "actor_id": None},
        )
        cursor.execute(
            "UPDATE audit_auditentry SET seq = 4, hash = %s WHERE id = %s", [fake, forged.pk]
        )
    assert "entry #5 " in _caught("its hash does not match")  # the next one no longer links


def test_a_reordered_pair_is_caught(trail):
    rows = h.chained_rows()
    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_auditentry SET seq = 1000 WHERE id = %s", [rows[1]["id"]])
        cursor.execute("UPDATE audit_auditentry SET seq = 2 WHERE id = %s", [rows[2]["id"]])
        cursor.execute("UPDATE audit_auditentry SET seq = 3 WHERE id = %s", [rows[1]["id"]])
    assert "entry #2 " in _caught("was altered, inserted or moved")


def test_a_rewritten_chain_no_longer_matches_the_anchored_leaf(trail):
    """The forger changes #2 and recomputes every hash after it: each entry links to the one
    before again, but the chain's head is not the one the ledger holds."""
    _set(2, "why", "a better-sounding reason")
    h.rehash_from(2)
    with h.tampering() as cursor:  # and even the recorded heads
        for anchor in ChainAnchor.objects.all():
            new_head = bytes(AuditEntry.objects.get(seq=anchor.seq).hash)
            cursor.execute(
                "UPDATE audit_chainanchor SET head = %s WHERE id = %s", [new_head, anchor.pk]
            )
    problem = _caught("the anchor of entry #6 (ledger leaf")
    assert "commits to another chain head" in problem


def test_the_model_refuses_updates_and_deletes(trail):
    entry = AuditEntry.objects.get(seq=1)
    entry.why = "changed"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(seq=1).update(why="changed")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        ChainAnchor.objects.all().delete()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditentry SET why = 'changed' WHERE seq = 1",
        "UPDATE audit_auditentry SET seq = 99 WHERE seq = 1",
        "UPDATE audit_auditentry SET hash = NULL, seq = NULL WHERE seq = 1",
        "UPDATE audit_auditentry SET why = 'x' WHERE seq IS NULL",
        "DELETE FROM audit_auditentry WHERE seq = 1",
        "DELETE FROM audit_auditentry WHERE seq IS NULL",
        "UPDATE audit_chainanchor SET leaf_index = leaf_index + 1",
        "DELETE FROM audit_chainanchor",
        "TRUNCATE audit_auditentry CASCADE",
        "TRUNCATE audit_chainanchor",
    ],
)
def test_the_database_refuses_rewrites(trail, sql):
    h.record(1)  # one entry still pending: even those cannot change
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred FK check left
        cursor.execute("SET LOCAL ledger.allow_truncate = 'off'")
        cursor.execute(sql)
    assert audit_verify().ok


@pytest.mark.postgres
def test_the_database_lets_a_seal_chain_a_pending_entry_once(trail):
    h.record(1)
    from ledger import services

    services.ledger_seal()
    assert AuditEntry.objects.filter(seq=9).exists()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE audit_auditentry SET hash = %s WHERE seq = 9", [bytes(32)])


def test_an_anchor_pointed_at_another_leaf_is_caught(trail):
    from ledger import services
    from tests.ledger.helpers import signed_anchor

    other = services.anchor_append(data=signed_anchor(1)).leaf.index  # a procedure's anchor
    services.ledger_seal()
    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_chainanchor SET leaf_index = %s WHERE seq = 8", [other])
    assert "commits to another chain head" in _caught(
        f"the anchor of entry #8 (ledger leaf {other})"
    )
    with h.tampering() as cursor:
        cursor.execute("UPDATE audit_chainanchor SET leaf_index = 9999 WHERE seq = 8")
    _caught("the anchor of entry #8 (ledger leaf 9999): the ledger has no such leaf")


def test_a_rewrite_with_new_anchors_is_caught_by_a_head_noted_earlier(trail):
    """The documented limit: someone who rewrites the entries, the anchor rows *and* appends new
    anchors with the member's key is caught by an auditor's receipt of an earlier head."""
    from django.utils import timezone

    from audit import chain
    from ledger import services

    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    receipt = out.getvalue().split("chain head: ")[1].split()[0]  # "8:<hex>"
    assert receipt.startswith("8:")

    _set(2, "why", "a better-sounding reason")
    h.rehash_from(2)
    with h.tampering() as cursor:
        cursor.execute("DELETE FROM audit_chainanchor")
    for seq in (6, 8):
        chain._anchor(seq, bytes(AuditEntry.objects.get(seq=seq).hash), timezone.now())
    services.ledger_seal()
    assert audit_verify().ok  # nothing in this database contradicts the forgery...

    err = io.StringIO()
    with pytest.raises(CommandError, match="AUDIT TRAIL MISMATCH"):
        call_command("audit_verify", expect=[receipt], stdout=io.StringIO(), stderr=err)
    assert "first bad entry: entry #8: the chain recomputed up to here differs" in err.getvalue()


@pytest.mark.parametrize("bad", ["8", "x:00", "8:abcd", "-1:" + "00" * 32])
def test_a_malformed_receipt_is_refused_clearly(trail, bad):
    with pytest.raises(CommandError, match="write SEQ:HEAD"):
        call_command("audit_verify", expect=[bad], stdout=io.StringIO())


def test_a_receipt_beyond_the_trail_is_reported(trail):
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", expect=["99:" + "00" * 32], stdout=io.StringIO(), stderr=err)
    assert "entry #99, whose head was noted earlier, is no longer in the trail" in err.getvalue()
