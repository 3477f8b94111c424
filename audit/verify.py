"""Verify the audit trail: recompute the chain from its first entry and check every anchor
against the ledger, up to the operator-signed latest checkpoint (docs/audit-trail.md).

Memory stays flat: entries are streamed in sequence order, anchors are checked as the chain
reaches their sequence number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from audit.chain import FIELDS, GENESIS, entry_bytes, entry_hash, head_commitment
from audit.models import AuditEntry, ChainAnchor
from ledger import anchor, keys, merkle, note, proofs
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, Leaf, MemberKey

CHUNK = 5_000
ANCHOR_BATCH = 500  # anchors whose leaves and proofs are read together


@dataclass
class TrailReport:
    entries: int = 0  # chained entries checked
    pending: int = 0  # entries not chained yet (written since the last seal)
    anchors: int = 0  # anchors checked against the ledger
    anchors_unsealed: int = 0  # anchored, but the leaf is not in a checkpoint yet
    head_seq: int = 0
    head: bytes = GENESIS
    anchored_seq: int = 0  # the last sequence number covered by a sealed, verified anchor
    checkpoint_size: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None

    @property
    def unanchored(self) -> int:
        """Chained entries after the last sealed anchor (anchored at the next seals)."""
        return self.head_seq - self.anchored_seq

    def problem(self, text: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(text)


class _Ledger:
    """The latest checkpoint, verified under the operator's key, and what proves leaves into it."""

    def __init__(self, report: TrailReport):
        self.report = report
        self.size, self.root, self.error = 0, merkle.EMPTY_ROOT, None
        self.reader = proofs.HashReader()
        self.anchor_keys = {
            (name, key_id): vkey
            for name, key_id, vkey in MemberKey.objects.filter(
                purpose=MemberKey.Purpose.ANCHOR
            ).values_list("member__name", "key_id", "verifier_key")
        }
        cp = Checkpoint.objects.order_by("-size").first()
        if cp is None:
            return
        try:
            body = CheckpointBody.parse(note.verify(cp.note, [keys.operator_verifier_key()]).text)
        except (note.NoteError, ValueError) as exc:
            self.error = f"the latest checkpoint ({cp.size}) fails the operator's signature: {exc}"
            return
        self.size, self.root = body.size, body.root_hash
        report.checkpoint_size = body.size

    def prepare(self, batch: list[ChainAnchor]) -> None:
        """Read and check the leaves of a batch of anchors: one query for the leaves, one read
        for all their inclusion proofs. What needs the recomputed head waits for :meth:`check`."""
        self.prepared: dict[int, tuple[bytes | None, str | None, bool]] = {}
        datas = dict(
            Leaf.objects.filter(index__in=[a.leaf_index for a in batch]).values_list(
                "index", "data"
            )
        )
        sealed = [a for a in batch if a.leaf_index in datas and a.leaf_index < self.size]
        plans = [merkle.inclusion_proof_ranges(a.leaf_index, self.size) for a in sealed]
        try:
            hashes = self.reader.range_hashes([r for plan in plans for r in plan])
            problem = None
        except proofs.SizeError as exc:
            hashes, problem = [], str(exc)
        paths, at = {}, 0
        for a, plan in zip(sealed, plans, strict=True):
            paths[a.seq], at = hashes[at : at + len(plan)], at + len(plan)
        for a in batch:
            where = f"the anchor of entry #{a.seq} (ledger leaf {a.leaf_index})"
            if a.leaf_index not in datas:
                self.prepared[a.seq] = (None, f"{where}: the ledger has no such leaf", True)
                continue
            data = bytes(datas[a.leaf_index])
            try:
                statement = anchor.statement_parse(data)
                vkey = self.anchor_keys.get((statement.member, f"{statement.key_id:08x}"))
                if vkey is None:
                    raise anchor.AnchorError(f"{statement.member} has no such anchor key")
                anchor.statement_verify(statement, vkey)
            except anchor.AnchorError as exc:
                self.prepared[a.seq] = (None, f"{where}: not a valid signed statement: {exc}", True)
                continue
            error = self.error
            if error is None and a.seq in paths:
                try:
                    if problem:
                        raise proofs.SizeError(problem)
                    merkle.verify_inclusion(
                        a.leaf_index, self.size, merkle.leaf_hash(data), paths[a.seq], self.root
                    )
                except (proofs.SizeError, merkle.ProofError) as exc:
                    error = f"{where}: not in the signed checkpoint of size {self.size}: {exc}"
            is_sealed = self.error is not None or a.leaf_index < self.size
            self.prepared[a.seq] = (statement.commitment, error, is_sealed)
        self.reader = proofs.HashReader()  # bounded: one batch's hashes at a time

    def check(self, a: ChainAnchor, head: bytes) -> str | None:
        """None when leaf ``a.leaf_index`` is a valid anchor of ``head`` at ``a.seq``, included in
        the signed checkpoint; else what is wrong. Raises _Unsealed when it is not sealed yet."""
        commitment, error, is_sealed = self.prepared[a.seq]
        if commitment is not None and commitment != head_commitment(a.seq, head):
            return (
                f"the anchor of entry #{a.seq} (ledger leaf {a.leaf_index}): the leaf commits to "
                "another chain head than the one recomputed from the first entry: the trail was "
                "rewritten up to here"
            )
        if error:
            return error
        if not is_sealed:
            raise _Unsealed
        return None


class _Unsealed(Exception):
    pass


def _batches(anchors: Iterator[ChainAnchor]) -> Iterator[list[ChainAnchor]]:
    while batch := list(islice(anchors, ANCHOR_BATCH)):
        yield batch


def _anchors(ledger: _Ledger) -> Iterator[ChainAnchor]:
    """Every anchor in sequence order, their leaves checked a batch ahead."""
    rows = ChainAnchor.objects.order_by("seq").iterator(chunk_size=CHUNK)
    for batch in _batches(rows):
        ledger.prepare(batch)
        yield from batch


def audit_verify(*, expect: dict[int, bytes] | None = None) -> TrailReport:
    """Recompute the whole chain and check every anchor; the report lists what is wrong, the
    first bad entry first. ``expect`` maps sequence numbers to heads an auditor noted earlier
    (what the page and the command print): the recomputed chain must still pass through them."""
    expect = dict(expect or {})
    report = TrailReport()
    report.pending = AuditEntry.objects.filter(seq__isnull=True).count()
    ledger = _Ledger(report)
    anchors = _anchors(ledger)
    next_anchor = next(anchors, None)
    recomputed = stored_prev = GENESIS
    expected = 1
    rows = (
        AuditEntry.objects.filter(seq__isnull=False)
        .order_by("seq")
        .values_list("seq", "hash", *FIELDS)
        .iterator(chunk_size=CHUNK)
    )
    for seq, stored, *row in rows:
        stored = bytes(stored) if stored is not None else b""
        report.entries += 1
        if seq != expected:
            report.problem(
                f"entry #{expected} is missing (deleted?): the next chained entry is #{seq}"
                if seq > expected
                else f"entry #{seq} appears out of order"
            )
            expected = seq
        expected += 1
        canonical = entry_bytes(seq=seq, **dict(zip(FIELDS, row, strict=True)))
        recomputed = entry_hash(recomputed, canonical)
        if entry_hash(stored_prev, canonical) != stored:
            report.problem(
                f"entry #{seq} (id {row[0]}, {row[4]} on {row[5]}): its hash does not match its "
                "recorded fields and the entry before it: it was altered, inserted or moved "
                "after it was chained"
            )
        stored_prev = stored
        if seq in expect and expect.pop(seq) != recomputed:
            report.problem(
                f"entry #{seq}: the chain recomputed up to here differs from the head noted "
                "earlier: the trail was rewritten up to here"
            )
        while next_anchor is not None and next_anchor.seq <= seq:
            _check_anchor(
                report, ledger, next_anchor, recomputed if next_anchor.seq == seq else None
            )
            next_anchor = next(anchors, None)
    report.head_seq, report.head = expected - 1, recomputed
    for a in [next_anchor, *anchors] if next_anchor is not None else []:
        report.problem(
            f"the anchor of entry #{a.seq} (ledger leaf {a.leaf_index}) covers entries the trail "
            f"no longer holds: it ends at #{report.head_seq} (entries deleted?)"
        )
    for seq in sorted(expect):
        report.problem(f"entry #{seq}, whose head was noted earlier, is no longer in the trail")
    return report


def _check_anchor(
    report: TrailReport, ledger: _Ledger, a: ChainAnchor, recomputed: bytes | None
) -> None:
    if recomputed is None:  # the chain jumped past this anchor's entry
        report.problem(f"the anchor of entry #{a.seq}: that entry is missing")
        return
    try:
        wrong = ledger.check(a, recomputed)
    except _Unsealed:
        report.anchors_unsealed += 1
        wrong = None
    else:
        report.anchors += 1
    if not wrong and bytes(a.head) != recomputed:  # the leaf is right; the table was edited
        wrong = (
            f"the anchor of entry #{a.seq} (ledger leaf {a.leaf_index}): the head recorded for "
            "it differs from the chain recomputed from the first entry"
        )
    if wrong:
        report.problem(wrong)
    elif not report.problems and a.leaf_index < ledger.size:
        report.anchored_seq = a.seq
