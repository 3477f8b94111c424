"""A witness hosted on this node: C2SP tlog-witness ``add-checkpoint`` semantics, in process.

The witness cosigns a checkpoint only if the log signed it and a consistency proof leads from the
last checkpoint this witness cosigned for that log. Its memory (:class:`WitnessState`) advances by
compare-and-swap, so two concurrent requests can never make it cosign two trees of one size.
Refusals mirror the protocol's answers, so the HTTP witness of the consortium issue wraps this.
"""

from __future__ import annotations

import time

from django.db import IntegrityError, transaction

from ledger import forks, merkle, note
from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.models import ForkEvidence, WitnessState


class WitnessRefusal(Exception):
    """The witness did not cosign. ``status`` is the tlog-witness HTTP answer."""

    status = 400

    def __init__(self, detail: str, *, size: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.size = size
        # (old size, proof) of the request refused, set by the operator's client side.
        self.sent: tuple[int, list[bytes]] | None = None


class UnknownLog(WitnessRefusal):
    status = 404


class NotSigned(WitnessRefusal):
    status = 403


class BadOldSize(WitnessRefusal):
    status = 400


class SizeConflict(WitnessRefusal):
    """The old size is not what this witness last cosigned; ``size`` is what it did."""

    status = 409


class BadProof(WitnessRefusal):
    status = 422


def witness_add_checkpoint(
    *,
    witness_signer_key: str,
    log_verifier_keys: dict[str, str] | dict[str, list[str]],
    old_size: int,
    proof: list[bytes],
    note_text: str,
    timestamp: int | None = None,
) -> str:
    """Cosign ``note_text`` if it extends what this witness last cosigned; return the line.

    ``log_verifier_keys`` maps each log origin this witness follows to the log's verifier key
    (or a list of them: a signature by any one of them will do).
    """
    try:
        cp = Checkpoint.parse(note.split_note(note_text)[0])
    except (note.NoteError, CheckpointError) as exc:
        raise NotSigned(f"not a checkpoint: {exc}") from exc
    log_key = log_verifier_keys.get(cp.origin)
    if log_key is None:
        raise UnknownLog(f"this witness does not follow the log {cp.origin!r}")
    try:
        note.verify(note_text, [log_key] if isinstance(log_key, str) else log_key)
    except note.NoteError as exc:
        raise NotSigned(f"the checkpoint is not signed by the log's key: {exc}") from exc
    if not 0 <= old_size <= cp.size:
        raise BadOldSize(f"old size {old_size} is above the checkpoint size {cp.size}")

    witness = note.verifier_key(witness_signer_key).split("+", 1)[0]
    evidence: dict | None = None
    try:
        with transaction.atomic():
            state = WitnessState.objects.filter(witness=witness, origin=cp.origin).first()
            known_size = state.size if state else 0
            known_root = bytes(state.root_hash) if state else merkle.EMPTY_ROOT
            known = {
                "cosigned_size": known_size,
                "cosigned_root": known_root,
                "cosigned_note": state.note if state else "",
            }
            if cp.size == known_size and cp.root_hash != known_root:
                # Whatever the old size: two trees of one size signed by the log is a fork.
                evidence = {**known, "kind": ForkEvidence.Kind.SPLIT_VIEW}
                raise SizeConflict(
                    f"a different tree of size {cp.size} was already cosigned", size=known_size
                )
            if old_size != known_size:
                raise SizeConflict(
                    f"this witness last cosigned size {known_size}, not {old_size}",
                    size=known_size,
                )
            try:
                merkle.verify_consistency(old_size, cp.size, known_root, cp.root_hash, proof)
            except merkle.ProofError as exc:
                evidence = {**known, "kind": ForkEvidence.Kind.BAD_PROOF}
                raise BadProof(f"the consistency proof does not hold: {exc}") from exc
            _advance(witness, cp, state, known_size, known_root, note_text)
    except WitnessRefusal as exc:
        if evidence is not None:
            forks.fork_record(
                origin=cp.origin,
                witness=witness,
                reported_by=ForkEvidence.Reporter.WITNESS,
                conflicting_size=cp.size,
                conflicting_root=cp.root_hash,
                conflicting_note=note_text,
                old_size=old_size,
                proof=proof,
                detail=exc.detail,
                **evidence,
            )
        raise
    when = int(time.time()) if timestamp is None else timestamp
    return note.cosign(cp.body(), witness_signer_key, when)


def _advance(
    witness: str,
    cp: Checkpoint,
    state: WitnessState | None,
    size: int,
    root: bytes,
    note_text: str,
) -> None:
    """Compare-and-swap the witness's memory from (size, root) to the checkpoint."""
    if state is None:
        try:
            with transaction.atomic():
                WitnessState.objects.create(
                    witness=witness,
                    origin=cp.origin,
                    size=cp.size,
                    root_hash=cp.root_hash,
                    note=note_text,
                )
            return
        except IntegrityError:
            moved = True
    else:
        moved = (
            WitnessState.objects.filter(pk=state.pk, size=size, root_hash=root).update(
                size=cp.size, root_hash=cp.root_hash, note=note_text
            )
            != 1
        )
    if moved:
        current = WitnessState.objects.get(witness=witness, origin=cp.origin)
        raise SizeConflict("another request advanced this witness first", size=current.size)
