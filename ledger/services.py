"""Every write to the ledger: appending anchors, sealing checkpoints, gathering cosignatures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.errors import Conflict, TooLarge, Unprocessable
from ledger import anchor, keys, merkle, note, proofs, witness
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, Cosignature, Leaf, LedgerLock, MemberKey, TreeNode

log = logging.getLogger(__name__)


def _lock(name: str) -> None:
    """Take a named row lock until the end of the transaction (a no-op outside PostgreSQL,
    where SQLite's IMMEDIATE transactions already serialise writers)."""
    LedgerLock.objects.select_for_update().get_or_create(name=name)


# --- anchoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorResult:
    leaf: Leaf
    created: bool


def _anchor_key(statement: anchor.Statement) -> MemberKey:
    key = (
        MemberKey.objects.select_related("member")
        .filter(
            member__name=statement.member,
            purpose=MemberKey.Purpose.ANCHOR,
            key_id=f"{statement.key_id:08x}",
        )
        .first()
    )
    if key is None:
        if not MemberKey.objects.filter(member__name=statement.member).exists():
            raise Unprocessable(
                f"{statement.member!r} is not a consortium member", code="unknown_member"
            )
        raise Unprocessable(
            f"member {statement.member!r} has no anchor key {statement.key_id:08x}",
            code="unknown_key",
        )
    if key.revoked_at is not None:
        raise Unprocessable(
            f"anchor key {key.key_id} of {statement.member!r} was revoked on "
            f"{key.revoked_at:%Y-%m-%d %H:%M}Z",
            code="revoked_key",
        )
    return key


def _existing(commitment: bytes, leaf_hash: bytes) -> AnchorResult:
    leaf = Leaf.objects.get(commitment=commitment)
    if bytes(leaf.leaf_hash) != leaf_hash:
        raise Conflict(
            f"this commitment is already anchored as leaf {leaf.index} by another statement",
            code="commitment_exists",
            extra={"leaf_index": leaf.index},
        )
    return AnchorResult(leaf, created=False)


def anchor_append(*, data: bytes, now: datetime | None = None) -> AnchorResult:
    """Check a signed procedure anchor and append it; the same anchor again answers its leaf."""
    if len(data) > settings.LEDGER_ANCHOR_MAX_BYTES:
        raise TooLarge(
            f"an anchor statement is at most {settings.LEDGER_ANCHOR_MAX_BYTES} bytes",
            code="anchor_too_large",
        )
    try:
        statement = anchor.statement_parse(data)
    except anchor.AnchorError as exc:
        raise Unprocessable(str(exc), code="bad_anchor") from exc
    key = _anchor_key(statement)
    try:
        anchor.statement_verify(statement, key.verifier_key)
    except anchor.AnchorError as exc:
        raise Unprocessable(str(exc), code="bad_signature") from exc
    now = now or timezone.now()
    if statement.timestamp > now + settings.LEDGER_ANCHOR_MAX_SKEW:
        raise Unprocessable(
            f"the statement is dated {statement.timestamp:%Y-%m-%dT%H:%M:%SZ}, in the future",
            code="bad_timestamp",
        )
    leaf_hash = merkle.leaf_hash(data)
    try:
        with transaction.atomic():
            _lock("append")
            last = Leaf.objects.order_by("-index").values_list("index", flat=True).first()
            leaf = Leaf.objects.create(
                index=0 if last is None else last + 1,
                leaf_hash=leaf_hash,
                commitment=statement.commitment,
                member_id=key.member_id,
                data=data,
                received_at=now,
            )
    except IntegrityError:
        # The unique commitment settles the race: whoever committed first owns the leaf.
        return _existing(statement.commitment, leaf_hash)
    return AnchorResult(leaf, created=True)


# --- sealing ---------------------------------------------------------------------------------


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-size").first()


def sealed_size() -> int:
    cp = checkpoint_latest()
    return cp.size if cp else 0


def _write_nodes(nodes: list[tuple[int, int, bytes]]) -> None:
    rows = [n for n in nodes if n[0] > 0]  # level 0 is the leaf table
    if connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy('COPY ledger_treenode (level, "index", hash) FROM STDIN') as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        TreeNode.objects.bulk_create(
            [TreeNode(level=lv, index=i, hash=h) for lv, i, h in rows], batch_size=5000
        )


@transaction.atomic
def ledger_seal(*, max_leaves: int | None = None) -> Checkpoint | None:
    """Integrate pending leaves into the stored tree and sign a checkpoint of the new size.

    Returns the new checkpoint, or None when nothing is pending (the first call makes the
    checkpoint of the empty log).
    """
    _lock("seal")
    latest = checkpoint_latest()
    old_size = latest.size if latest else 0
    limit = max_leaves or settings.LEDGER_SEAL_BATCH
    pending = (
        Leaf.objects.filter(index__gte=old_size, index__lt=old_size + limit)
        .order_by("index")
        .values_list("index", "leaf_hash")
    )
    reader = proofs.HashReader()
    frontier = [reader.read([s])[s] for s in merkle.frontier(old_size)] if old_size else []
    expected = [old_size]

    def leaf_hashes():
        for index, h in pending.iterator(chunk_size=20_000):
            if index != expected[0]:
                raise RuntimeError(f"the log has a gap: leaf {expected[0]} is missing")
            expected[0] += 1
            yield bytes(h)

    nodes, frontier = merkle.append_leaves(old_size, frontier, leaf_hashes())
    new_size = expected[0]
    if latest is not None and new_size == old_size:
        return None
    _write_nodes(nodes)
    root = merkle.fold(frontier)
    body = CheckpointBody(settings.LEDGER_ORIGIN, new_size, root).body()
    return Checkpoint.objects.create(
        size=new_size,
        root_hash=root,
        note=note.sign(body, keys.operator_signer_key()),
        created_at=timezone.now(),
    )


# --- cosigning -------------------------------------------------------------------------------


class WitnessUnavailable(Exception):
    """The witness could not be asked (no key on this node; later: network failure)."""


def cosignature_request(
    *, member_key: MemberKey, note_text: str, old_size: int, proof: list[bytes]
) -> str:
    """Ask a member's witness to cosign; return its cosignature line.

    The one place that talks to a witness. Today every witness is hosted on this node (its key in
    var/keys/witnesses/); the consortium issue turns this into a C2SP tlog-witness HTTP call.
    Raises :class:`witness.WitnessRefusal` subclasses exactly as the protocol answers.
    """
    signer = keys.local_witness_signer_key(member_key.member.name)
    if signer is None or note.verifier_key(signer) != member_key.verifier_key:
        raise WitnessUnavailable(f"no reachable witness for {member_key.member.name}")
    return witness.witness_add_checkpoint(
        witness_signer_key=signer,
        log_verifier_keys={settings.LEDGER_ORIGIN: keys.operator_verifier_key()},
        old_size=old_size,
        proof=proof,
        note_text=note_text,
    )


def _last_cosigned_size(member_id: int) -> int:
    last = (
        Cosignature.objects.filter(member_id=member_id)
        .order_by("-checkpoint__size")
        .values_list("checkpoint__size", flat=True)
        .first()
    )
    return last or 0


def checkpoint_cosign(*, checkpoint: Checkpoint) -> dict[str, str]:
    """Gather cosignatures from every witness that has not cosigned ``checkpoint`` yet.

    Returns ``{member name: outcome}``. A witness that refuses or is down is skipped and asked
    again at the next seal; it never blocks the others.
    """
    outcomes: dict[str, str] = {}
    done = set(
        Cosignature.objects.filter(checkpoint=checkpoint).values_list("member_id", flat=True)
    )
    witnesses = MemberKey.objects.select_related("member").filter(
        purpose=MemberKey.Purpose.COSIGN, revoked_at__isnull=True
    )
    for member_key in witnesses:
        name = member_key.member.name
        if member_key.member_id in done:
            outcomes[name] = "already cosigned"
            continue
        old_size = _last_cosigned_size(member_key.member_id)
        try:
            line = _request_with_retry(member_key, checkpoint, old_size)
            timestamps = note.verify_cosignature(
                note.add_signatures(checkpoint.note, [line]), [member_key.verifier_key]
            )
        except (witness.WitnessRefusal, WitnessUnavailable, note.NoteError, proofs.SizeError) as e:
            log.warning("witness %s did not cosign checkpoint %s: %s", name, checkpoint.size, e)
            outcomes[name] = f"refused: {e}"
            continue
        try:
            with transaction.atomic():
                Cosignature.objects.create(
                    checkpoint=checkpoint,
                    member=member_key.member,
                    key=member_key,
                    timestamp=timestamps[name],
                    line=line,
                    received_at=timezone.now(),
                )
        except IntegrityError:
            pass  # a concurrent gatherer stored it first
        outcomes[name] = "cosigned"
    return outcomes


def _request_with_retry(member_key: MemberKey, checkpoint: Checkpoint, old_size: int) -> str:
    for _attempt in range(2):
        proof = proofs.consistency(old_size, checkpoint.size, sealed_size=checkpoint.size)
        try:
            return cosignature_request(
                member_key=member_key, note_text=checkpoint.note, old_size=old_size, proof=proof
            )
        except witness.SizeConflict as exc:
            if exc.size is None or exc.size > checkpoint.size or exc.size == old_size:
                raise
            old_size = exc.size  # the witness is elsewhere; prove from where it is
    raise witness.SizeConflict("the witness keeps moving", size=old_size)


def checkpoint_cosigners(checkpoint: Checkpoint) -> list[Cosignature]:
    return list(checkpoint.cosignatures.select_related("member").order_by("member__name"))


def checkpoint_is_final(checkpoint: Checkpoint) -> bool:
    return checkpoint.cosignatures.count() >= settings.LEDGER_QUORUM


def checkpoint_text(checkpoint: Checkpoint) -> str:
    """The signed note with every cosignature line, as C2SP writes it."""
    lines = [c.line for c in checkpoint_cosigners(checkpoint)]
    return note.add_signatures(checkpoint.note, lines) if lines else checkpoint.note


def ledger_seal_and_cosign() -> list[Checkpoint]:
    """What the beat task does: seal pending leaves batch by batch, then gather cosignatures
    for the newest checkpoint (and for a late witness, on the next round)."""
    sealed = []
    while (cp := ledger_seal()) is not None:
        sealed.append(cp)
        if len(sealed) >= 10:  # bounded work per run; the next beat continues
            break
    latest = checkpoint_latest()
    if latest is not None:
        checkpoint_cosign(checkpoint=latest)
    return sealed
