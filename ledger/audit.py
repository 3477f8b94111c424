"""Recompute the ledger from its leaves and check every stored hash, checkpoint and cosignature.

Memory stays flat: every level of the tree is streamed in order from the database, and each
stored node is compared with the hash of its two stored children, whose own correctness was
checked one level below (level 0 against SHA-256 of the leaf data itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings

from ledger import anchor, keys, merkle, note, proofs
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, Cosignature, Leaf, MemberKey, TreeNode, WitnessState

CHUNK = 10_000


@dataclass
class AuditReport:
    leaves: int = 0
    nodes: int = 0
    checkpoints: int = 0
    cosignatures: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append(text)


def _leaf_hashes(report: AuditReport, size: int) -> Iterator[tuple[int, bytes]]:
    anchor_keys: dict[tuple[int, str], str] = {
        (k.member_id, k.key_id): k.verifier_key
        for k in MemberKey.objects.filter(purpose=MemberKey.Purpose.ANCHOR)
    }
    rows = Leaf.objects.order_by("index").values_list(
        "index", "leaf_hash", "commitment", "member_id", "data"
    )
    expected = 0
    for index, stored, commitment, member_id, data in rows.iterator(chunk_size=CHUNK):
        data, stored = bytes(data), bytes(stored)
        if index != expected:
            report.problem(f"leaf {expected} is missing (next stored leaf is {index})")
            expected = index
        expected += 1
        report.leaves += 1
        if merkle.leaf_hash(data) != stored:
            report.problem(f"leaf {index}: stored leaf hash is not SHA-256(0x00 || data)")
        try:
            statement = anchor.statement_parse(data)
            if statement.commitment != bytes(commitment):
                report.problem(f"leaf {index}: commitment column differs from the statement")
            vkey = anchor_keys.get((member_id, f"{statement.key_id:08x}"))
            if vkey is None:
                report.problem(f"leaf {index}: no anchor key {statement.key_id:08x} of its member")
            else:
                anchor.statement_verify(statement, vkey)
        except anchor.AnchorError as exc:
            report.problem(f"leaf {index}: {exc}")
        if index < size:
            yield index, stored


def _check_level(
    report: AuditReport, level: int, children: Iterator[tuple[int, bytes]], size: int
) -> Iterator[tuple[int, bytes]]:
    """Yield stored level ``level`` nodes, each checked against its two stored children."""
    stored = (
        # Bounded by the size read at the start: a seal committing meanwhile changes nothing here.
        TreeNode.objects.filter(level=level, index__lt=size >> level)
        .order_by("index")
        .values_list("index", "hash")
        .iterator(chunk_size=CHUNK)
    )
    count = size >> level
    expected = 0
    for index, h in stored:
        h = bytes(h)
        report.nodes += 1
        if index != expected:
            report.problem(f"node ({level}, {expected}) is missing")
            return
        expected += 1
        left, right = next(children, None), next(children, None)
        if left is None or right is None:
            report.problem(f"node ({level}, {index}) exists beyond the sealed size {size}")
            return
        if merkle.node_hash(left[1], right[1]) != h:
            report.problem(f"node ({level}, {index}): stored hash is not the hash of its children")
        yield index, h
    if expected != count:
        report.problem(f"level {level} has {expected} nodes; a tree of {size} needs {count}")
    for _ in children:  # drain, so level 0 still checks every leaf
        pass


def ledger_audit() -> AuditReport:
    report = AuditReport()
    size = Checkpoint.objects.order_by("-size").values_list("size", flat=True).first() or 0
    level_stream: Iterator[tuple[int, bytes]] = _leaf_hashes(report, size)
    for level in range(1, max(size, 1).bit_length()):
        level_stream = _check_level(report, level, level_stream, size)
    for _ in level_stream:
        pass
    if report.leaves < size:
        report.problem(f"the checkpoint says {size} leaves; only {report.leaves} are stored")
    if report.ok:
        _check_checkpoints(report)
        _check_witnesses(report, size)
    return report


def _check_witnesses(report: AuditReport, size: int) -> None:
    """A log cut back after witnesses cosigned more is caught: each witness hosted here remembers
    the largest tree it cosigned, and the log must still hold that tree."""
    for state in WitnessState.objects.filter(origin=settings.LEDGER_ORIGIN):
        if state.size > size:
            report.problem(
                f"witness {state.witness} cosigned a tree of {state.size} leaves; "
                f"the log now ends at {size}"
            )
        elif state.size and proofs.root_at(state.size, sealed_size=size) != bytes(state.root_hash):
            report.problem(
                f"witness {state.witness} cosigned another tree of size {state.size} than the "
                "log holds"
            )


def _check_checkpoints(report: AuditReport) -> None:
    operator = keys.operator_verifier_key()
    cosign_keys = {k.pk: k.verifier_key for k in MemberKey.objects.filter(purpose="cosign")}
    sealed = Checkpoint.objects.order_by("-size").values_list("size", flat=True).first() or 0
    reader = proofs.HashReader()
    previous = None
    for cp in Checkpoint.objects.order_by("size").iterator(chunk_size=1000):
        report.checkpoints += 1
        root = bytes(cp.root_hash)
        try:
            body = CheckpointBody.parse(note.verify(cp.note, [operator]).text)
        except (note.NoteError, ValueError) as exc:
            report.problem(f"checkpoint {cp.size}: the operator's signature fails: {exc}")
            continue
        if (body.origin, body.size, body.root_hash) != (settings.LEDGER_ORIGIN, cp.size, root):
            report.problem(f"checkpoint {cp.size}: the signed note differs from its columns")
        if proofs.root_at(cp.size, sealed_size=sealed, reader=reader) != root:
            report.problem(f"checkpoint {cp.size}: root hash differs from the stored tree")
        if previous is not None:
            proof = proofs.consistency(previous.size, cp.size, sealed_size=sealed, reader=reader)
            try:
                merkle.verify_consistency(
                    previous.size, cp.size, bytes(previous.root_hash), root, proof
                )
            except merkle.ProofError as exc:
                report.problem(f"checkpoints {previous.size} → {cp.size} inconsistent: {exc}")
        previous = cp
        reader = proofs.HashReader()  # bounded cache
    for cosig in Cosignature.objects.select_related("checkpoint", "member").iterator(1000):
        report.cosignatures += 1
        try:
            note.verify_cosignature(
                note.add_signatures(cosig.checkpoint.note, [cosig.line]),
                [cosign_keys[cosig.key_id]],
            )
        except (note.NoteError, KeyError) as exc:
            report.problem(
                f"cosignature of {cosig.member.name} on checkpoint {cosig.checkpoint.size}: {exc}"
            )
