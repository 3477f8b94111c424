"""Writers and seals at the same time on PostgreSQL: writers take no lock, every entry is chained
exactly once (a late-committing one at a later seal), and the trail verifies."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from audit.models import AuditEntry, ChainAnchor
from audit.services import audit_record
from audit.verify import audit_verify
from ledger import services
from tests.audit import helpers as h

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _writer(n: int) -> int:
    try:
        for i in range(10):
            with transaction.atomic():
                audit_record(actor=None, action="claim.approve", target=f"claim:w{n}-{i}")
        return 10
    finally:
        connection.close()


def _sealer(stop: threading.Event) -> int:
    seals = 0
    try:
        while not stop.is_set():
            services.ledger_seal()
            seals += 1
    finally:
        connection.close()
    return seals


def test_writers_and_seals_racing_chain_every_entry_once(caplog):
    h.node()
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=6) as pool:
        sealers = [pool.submit(_sealer, stop) for _ in range(2)]  # two beats overlapping
        written = sum(pool.map(_writer, range(4)))
        stop.set()
        assert all(s.result() >= 1 for s in sealers)
    assert not [r for r in caplog.records if "could not be chained" in r.getMessage()]
    services.ledger_seal()  # whatever was written after the last racing seal
    seqs = sorted(AuditEntry.objects.values_list("seq", flat=True))
    assert seqs == list(range(1, written + 1))
    report = audit_verify()
    assert report.ok, report.problems
    assert report.anchored_seq == written
    assert ChainAnchor.objects.count() >= 1


def test_an_entry_committed_after_a_later_one_was_chained_is_chained_at_the_next_seal():
    h.node()
    started, release = threading.Event(), threading.Event()

    def slow_writer() -> int:
        try:
            with transaction.atomic():
                entry = audit_record(actor=None, action="claim.deny", target="claim:slow")
                started.set()
                release.wait(10)
            return entry.pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(slow_writer)
        assert started.wait(10)
        fast = audit_record(actor=None, action="claim.approve", target="claim:fast")
        services.ledger_seal()  # the slow entry, with the lower id, is not committed yet
        assert AuditEntry.objects.get(pk=fast.pk).seq == 1
        release.set()
        slow_id = slow.result()
    assert slow_id < fast.pk
    assert AuditEntry.objects.get(pk=slow_id).seq is None  # pending, not skipped
    services.ledger_seal()
    assert AuditEntry.objects.get(pk=slow_id).seq == 2
    assert audit_verify().ok
