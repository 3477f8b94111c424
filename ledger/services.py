"""Every write to the ledger: appending anchors, sealing checkpoints, gathering cosignatures."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.errors import Conflict, DomainError, TooLarge, Unprocessable
from ledger import anchor, conf, forks, keys, merkle, note, proofs, witness, witness_client
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import (
    Checkpoint,
    Cosignature,
    ForkEvidence,
    Leaf,
    LedgerLock,
    MemberKey,
    TreeNode,
)
from ledger.witness_client import WitnessUnavailable

log = logging.getLogger(__name__)


def _lock(name: str) -> None:
    """Take a named row lock until the end of the transaction (a no-op outside PostgreSQL,
    where SQLite's IMMEDIATE transactions already serialise writers)."""
    LedgerLock.objects.select_for_update().get_or_create(name=name)


# --- anchoring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchoredLeaf:
    """A leaf as the API answers it (no model instance: batches make thousands)."""

    index: int
    leaf_hash: bytes
    member: str
    data: bytes
    received_at: datetime

    @classmethod
    def of(cls, leaf: Leaf) -> AnchoredLeaf:
        return cls(
            leaf.index, bytes(leaf.leaf_hash), leaf.member.name, bytes(leaf.data), leaf.received_at
        )


@dataclass(frozen=True, slots=True)
class AnchorResult:
    leaf: AnchoredLeaf
    created: bool


@dataclass(frozen=True)
class _Checked:
    data: bytes
    statement: anchor.Statement
    member_id: int
    leaf_hash: bytes


_KEY_SQL = (
    "SELECT k.member_id, k.verifier_key, k.revoked_at FROM ledger_memberkey k "
    "JOIN ledger_member m ON m.id = k.member_id "
    "WHERE m.name = %s AND k.purpose = 'anchor' AND k.key_id = %s"
)


def _anchor_key(statement: anchor.Statement) -> tuple[int, str]:
    """(member id, verifier key) of the live key that must have signed ``statement``."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [statement.member, f"{statement.key_id:08x}"])
        row = cursor.fetchone()
    if row is None:
        if not MemberKey.objects.filter(member__name=statement.member).exists():
            raise Unprocessable(
                f"{statement.member!r} is not a consortium member", code="unknown_member"
            )
        raise Unprocessable(
            f"member {statement.member!r} has no anchor key {statement.key_id:08x}",
            code="unknown_key",
        )
    member_id, verifier_key, revoked_at = row
    if revoked_at is not None:
        if isinstance(revoked_at, str):  # SQLite hands raw SQL timestamps back as text
            revoked_at = datetime.fromisoformat(revoked_at)
        raise Unprocessable(
            f"anchor key {statement.key_id:08x} of {statement.member!r} was revoked on "
            f"{revoked_at:%Y-%m-%d %H:%M}Z",
            code="revoked_key",
        )
    return member_id, verifier_key


def _check(data: bytes, now: datetime, known_keys: dict | None = None) -> _Checked:
    """Everything about one statement that needs no write: size, form, key, signature, time."""
    if len(data) > settings.LEDGER_ANCHOR_MAX_BYTES:
        raise TooLarge(
            f"an anchor statement is at most {settings.LEDGER_ANCHOR_MAX_BYTES} bytes",
            code="anchor_too_large",
        )
    try:
        statement = anchor.statement_parse(data)
    except anchor.AnchorError as exc:
        raise Unprocessable(str(exc), code="bad_anchor") from exc
    if known_keys is None:
        member_id, verifier_key = _anchor_key(statement)
    else:  # a batch looks each key up once
        where = (statement.member, statement.key_id)
        if where not in known_keys:
            try:
                known_keys[where] = _anchor_key(statement)
            except DomainError as exc:
                known_keys[where] = exc
        if isinstance(found := known_keys[where], DomainError):
            raise found
        member_id, verifier_key = found
    try:
        anchor.statement_verify(statement, verifier_key)
    except anchor.AnchorError as exc:
        raise Unprocessable(str(exc), code="bad_signature") from exc
    if statement.timestamp > now + settings.LEDGER_ANCHOR_MAX_SKEW:
        raise Unprocessable(
            f"the statement is dated {statement.timestamp:%Y-%m-%dT%H:%M:%SZ}, in the future",
            code="bad_timestamp",
        )
    return _Checked(data, statement, member_id, merkle.leaf_hash(data))


def _existing(commitment: bytes, leaf_hash: bytes) -> AnchorResult:
    leaf = Leaf.objects.select_related("member").get(commitment=commitment)
    if bytes(leaf.leaf_hash) != leaf_hash:
        raise Conflict(
            f"this commitment is already anchored as leaf {leaf.index} by another statement",
            code="commitment_exists",
            extra={"leaf_index": leaf.index},
        )
    return AnchorResult(AnchoredLeaf.of(leaf), created=False)


# PostgreSQL: bump the counter and insert in one statement. The counter's row lock orders appends;
# a failed insert (a duplicate commitment) undoes the bump with it, so indexes never gap.
_INSERT_SQL = """
WITH next AS (
    UPDATE ledger_ledgerlock SET value = value + %(n)s WHERE name = 'append'
    RETURNING value - %(n)s AS base
)
INSERT INTO ledger_leaf ("index", leaf_hash, commitment, member_id, data, received_at)
SELECT next.base + t.ord - 1, t.leaf_hash, t.commitment, t.member_id, t.data, %(now)s
FROM next, unnest(
    %(leaf_hash)b::bytea[], %(commitment)b::bytea[], %(member_id)b::bigint[], %(data)b::bytea[]
) WITH ORDINALITY AS t(leaf_hash, commitment, member_id, data, ord)
RETURNING "index"
"""
_SYNC_COUNTER_SQL = """
INSERT INTO ledger_ledgerlock (name, value)
SELECT 'append', COALESCE(MAX("index") + 1, 0) FROM ledger_leaf
ON CONFLICT (name) DO UPDATE SET value = GREATEST(ledger_ledgerlock.value, EXCLUDED.value)
"""


@contextmanager
def _binary_cursor():
    """A psycopg cursor with server-side, binary parameters: arrays of bytea travel as bytes,
    not as quoted hex text (Django's default client-side binding). Errors become Django's."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _sync_counter() -> None:
    """Create the counter, or move it up to the log's length; it never goes down."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SYNC_COUNTER_SQL)


def _insert(checked: list[_Checked], now: datetime) -> list[int]:
    """Append the leaves in order; returns their indexes. Raises IntegrityError on a duplicate."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            _lock("append")
            last = Leaf.objects.order_by("-index").values_list("index", flat=True).first()
            first = 0 if last is None else last + 1
            Leaf.objects.bulk_create(
                Leaf(
                    index=first + i,
                    leaf_hash=c.leaf_hash,
                    commitment=c.statement.commitment,
                    member_id=c.member_id,
                    data=c.data,
                    received_at=now,
                )
                for i, c in enumerate(checked)
            )
        return list(range(first, first + len(checked)))
    params = {
        "n": len(checked),
        "now": now,
        "leaf_hash": [c.leaf_hash for c in checked],
        "commitment": [c.statement.commitment for c in checked],
        "member_id": [c.member_id for c in checked],
        "data": [c.data for c in checked],
    }
    for _attempt in range(2):
        # Outside a transaction the statement commits by itself: one round trip per append.
        # Inside the caller's, a savepoint keeps a duplicate from spoiling it.
        scope = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with scope, _binary_cursor() as cursor:
            cursor.execute(_INSERT_SQL, params, binary=True)
            indexes = [row[0] for row in cursor.fetchall()]
        if len(indexes) == len(checked):
            return indexes
        _sync_counter()  # no counter row yet: start it from the log
    raise RuntimeError("the append counter could not be initialised")


def _anchored(commitments: list[bytes]) -> list[bytes]:
    """Which of these commitments the log already holds."""
    if not commitments:
        return []
    if connection.vendor != "postgresql":
        found = Leaf.objects.filter(commitment__in=commitments).values_list("commitment", flat=True)
        return [bytes(c) for c in found]
    with _binary_cursor() as cursor:
        cursor.execute(
            "SELECT commitment FROM ledger_leaf WHERE commitment = ANY(%b::bytea[])",
            [commitments],
            binary=True,
        )
        return [bytes(row[0]) for row in cursor.fetchall()]


def _is_index_collision(commitments: list[bytes]) -> bool:
    """After an IntegrityError: True when no commitment clashed, so the index did (the counter
    was behind the log, e.g. after a restore); the caller resyncs and tries again."""
    return (
        connection.vendor == "postgresql"
        and not Leaf.objects.filter(commitment__in=commitments).exists()
    )


def _appended_leaf(checked: _Checked, index: int, now: datetime) -> AnchoredLeaf:
    return AnchoredLeaf(index, checked.leaf_hash, checked.statement.member, checked.data, now)


def anchor_append(*, data: bytes, now: datetime | None = None) -> AnchorResult:
    """Check a signed procedure anchor and append it; the same anchor again answers its leaf."""
    now = now or timezone.now()
    return _append_one(_check(data, now), now)


def _append_one(checked: _Checked, now: datetime) -> AnchorResult:
    for _attempt in range(3):
        try:
            [index] = _insert([checked], now)
            break
        except IntegrityError:
            if not _is_index_collision([checked.statement.commitment]):
                # The unique commitment settles the race: whoever committed first owns the leaf.
                return _existing(checked.statement.commitment, checked.leaf_hash)
            _sync_counter()
    else:
        raise RuntimeError("leaf indexes keep colliding: is another writer bypassing the counter?")
    return AnchorResult(_appended_leaf(checked, index, now), created=True)


def anchor_append_many(
    *, datas: list[bytes], now: datetime | None = None
) -> list[AnchorResult | DomainError]:
    """Append a batch of statements in one transaction; one result or refusal per statement.

    Each statement is checked on its own, so one bad line refuses only itself. Statements whose
    commitment is already anchored (before or earlier in the batch) answer the existing leaf.
    """
    now = now or timezone.now()
    results: list[AnchorResult | DomainError | None] = []
    fresh: dict[bytes, tuple[int, _Checked]] = {}  # commitment -> (position, checked)
    known_keys: dict = {}
    for position, data in enumerate(datas):
        try:
            checked = _check(data, now, known_keys)
        except DomainError as exc:
            results.append(exc)
            continue
        results.append(None)
        first = fresh.setdefault(checked.statement.commitment, (position, checked))
        if first[0] != position:
            results[position] = _same_or_conflict(first[1], checked)
    for _attempt in range(3):
        for commitment in _anchored(list(fresh)):
            position, checked = fresh.pop(commitment)
            results[position] = _existing_or_error(checked)
        batch = sorted(fresh.values(), key=lambda item: item[0])
        try:
            indexes = _insert([c for _, c in batch], now) if batch else []
        except IntegrityError:
            if _is_index_collision(list(fresh)):
                _sync_counter()
            continue  # a concurrent append took one of these commitments: look again
        for (position, checked), index in zip(batch, indexes, strict=True):
            results[position] = AnchorResult(_appended_leaf(checked, index, now), created=True)
        break
    else:
        # Batches overlapping again and again: append what is left one by one (each settles
        # its own race), rather than failing the whole batch.
        for position, checked in fresh.values():
            try:
                results[position] = _append_one(checked, now)
            except DomainError as exc:
                results[position] = exc
    for position, result in enumerate(results):
        if result is None:  # a repeat within the batch of a statement appended just now
            results[position] = _existing_or_error(_check(datas[position], now, known_keys))
    return results


def _same_or_conflict(first: _Checked, again: _Checked) -> DomainError | None:
    if first.leaf_hash == again.leaf_hash:
        return None  # resolved to the first one's leaf once it is appended
    return Conflict(
        "this commitment appears twice in the batch with different statements",
        code="commitment_exists",
    )


def _existing_or_error(checked: _Checked) -> AnchorResult | DomainError:
    try:
        return _existing(checked.statement.commitment, checked.leaf_hash)
    except DomainError as exc:
        return exc


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


def ledger_seal(*, max_leaves: int | None = None) -> Checkpoint | None:
    """Integrate pending leaves into the stored tree and sign a checkpoint of the new size.

    Returns the new checkpoint, or None when nothing is pending (the first call makes the
    checkpoint of the empty log). First, the audit trail chains its new entries and anchors its
    head as one leaf, which this checkpoint then includes (docs/audit-trail.md).
    """
    _audit_chain()
    return _seal(max_leaves=max_leaves)


def _audit_chain() -> None:
    """The seal hook of the audit trail. Its own (short) transaction, so the append counter is
    not held while the tree is built; a failure is logged and never stops the seal (the entries
    stay pending, and the next seal tries again)."""
    from audit.chain import audit_chain

    try:
        audit_chain()
    except Exception:
        log.exception("the audit trail could not be chained at this seal")


@transaction.atomic
def _seal(*, max_leaves: int | None) -> Checkpoint | None:
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
    subtrees = merkle.frontier(old_size)
    got = reader.read(subtrees) if subtrees else {}
    frontier = [got[s] for s in subtrees]
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


def cosignature_request(
    *, member_key: MemberKey, note_text: str, old_size: int, proof: list[bytes]
) -> str:
    """Ask a member's witness to cosign; return its cosignature line.

    The one place that talks to a witness. A member with a ``witness_url`` is asked over HTTP
    (C2SP tlog-witness ``add-checkpoint``, :mod:`ledger.witness_client`: short timeout, bounded
    retries with backoff); it touches no database, so witnesses can be asked in parallel. A member
    without one is a witness hosted on this node (its key in var/keys/witnesses/). Raises
    :class:`witness.WitnessRefusal` subclasses exactly as the protocol answers, and
    :class:`WitnessUnavailable` when the witness cannot be asked.
    """
    member = member_key.member
    if member.witness_url:
        lines = witness_client.request_cosignatures(
            member.witness_url,
            old_size=old_size,
            proof=proof,
            note_text=note_text,
            timeout=conf.witness_timeout_s(),
            retries=conf.witness_retries(),
            backoff=conf.witness_backoff_s(),
        )
        return _line_by(member_key, note_text, lines)
    signer = keys.local_witness_signer_key(member.name)
    if signer is None or note.verifier_key(signer) != member_key.verifier_key:
        raise WitnessUnavailable(f"no reachable witness for {member.name}")
    return witness.witness_add_checkpoint(
        witness_signer_key=signer,
        log_verifier_keys={settings.LEDGER_ORIGIN: keys.operator_verifier_key()},
        old_size=old_size,
        proof=proof,
        note_text=note_text,
    )


def _line_by(member_key: MemberKey, note_text: str, lines: list[str]) -> str:
    """The answered line that is a valid cosignature by the member's key (others are ignored,
    as the protocol asks)."""
    for line in lines:
        try:
            if note.verify_cosignature(
                note.add_signatures(note_text, [line]), [member_key.verifier_key]
            ):
                return line
        except note.NoteError:
            continue
    raise note.NoteError(f"no cosignature by {member_key.verifier_key} in the witness's answer")


def _last_cosigned_size(member_id: int) -> int:
    last = (
        Cosignature.objects.filter(member_id=member_id)
        .order_by("-checkpoint__size")
        .values_list("checkpoint__size", flat=True)
        .first()
    )
    return last or 0


_Outcome = str | Exception  # a cosignature line, or why there is none
_REFUSED = (witness.WitnessRefusal, WitnessUnavailable, note.NoteError, proofs.SizeError)


def checkpoint_cosign(*, checkpoint: Checkpoint) -> dict[str, str]:
    """Gather cosignatures from every witness that has not cosigned ``checkpoint`` yet.

    Returns ``{member name: outcome}``. Witnesses reached over HTTP are asked in parallel; a
    witness that refuses, is slow or is down is skipped and asked again at the next seal, and
    never blocks the others for longer than its bounded attempts.
    """
    outcomes: dict[str, str] = {}
    done = set(
        Cosignature.objects.filter(checkpoint=checkpoint).values_list("member_id", flat=True)
    )
    witnesses = MemberKey.objects.select_related("member").filter(
        purpose=MemberKey.Purpose.COSIGN, revoked_at__isnull=True
    )
    asked: list[tuple[MemberKey, int]] = []
    for member_key in witnesses:
        if member_key.member_id in done:
            outcomes[member_key.member.name] = "already cosigned"
        else:
            asked.append((member_key, _last_cosigned_size(member_key.member_id)))
    results: dict[int, _Outcome] = _ask_remote(
        [(mk, old) for mk, old in asked if mk.member.witness_url], checkpoint
    )
    for member_key, old_size in asked:
        if not member_key.member.witness_url:
            try:
                results[member_key.pk] = _request_with_retry(member_key, checkpoint, old_size)
            except _REFUSED as exc:
                results[member_key.pk] = exc
    for member_key, _old in asked:
        result = results[member_key.pk]
        if member_key.member.witness_url and _is_fork_refusal(result, checkpoint):
            _record_reported_fork(member_key, checkpoint, result)
        outcomes[member_key.member.name] = _store(member_key, checkpoint, result)
    return outcomes


def _is_fork_refusal(result: _Outcome, checkpoint: Checkpoint) -> bool:
    """A remote witness says our log forked: our proof from what it cosigned does not verify
    (422), or it cosigned another tree of this very size (409 with our size, after we proved
    from there). A hosted witness records its own evidence (:mod:`ledger.witness`)."""
    if isinstance(result, witness.BadProof):
        return True
    return isinstance(result, witness.SizeConflict) and result.size == checkpoint.size


def _record_reported_fork(
    member_key: MemberKey, checkpoint: Checkpoint, refusal: witness.WitnessRefusal
) -> None:
    """Keep a remote witness's fork-style refusal of our checkpoint as ForkEvidence: the
    checkpoint of ours it cosigned last (with its cosignature, as it accepted it) and the one it
    refused, with the proof we sent."""
    old_size, proof = refusal.sent or (0, [])
    cosigned: Cosignature | None = None
    if isinstance(refusal, witness.BadProof):
        kind, cosigned_size = ForkEvidence.Kind.BAD_PROOF, old_size
        # What it cosigned at that size is known only if it cosigned it with us.
        cosigned = (
            Cosignature.objects.select_related("checkpoint")
            .filter(checkpoint__size=old_size, member_id=member_key.member_id)
            .first()
        )
    else:
        kind, cosigned_size = ForkEvidence.Kind.SPLIT_VIEW, checkpoint.size
    cosigned_cp = cosigned.checkpoint if cosigned is not None else None
    forks.fork_record(
        origin=checkpoint.note.split("\n", 1)[0],
        witness=member_key.member.name,
        reported_by=ForkEvidence.Reporter.OPERATOR,
        kind=kind,
        cosigned_size=cosigned_size,
        cosigned_root=bytes(cosigned_cp.root_hash) if cosigned_cp is not None else None,
        cosigned_note=(
            note.add_signatures(cosigned_cp.note, [cosigned.line]) if cosigned_cp else ""
        ),
        conflicting_size=checkpoint.size,
        conflicting_root=bytes(checkpoint.root_hash),
        conflicting_note=checkpoint.note,
        old_size=old_size,
        proof=proof,
        detail=f"{member_key.member.witness_url}: {refusal.detail}",
    )


def _store(member_key: MemberKey, checkpoint: Checkpoint, result: _Outcome) -> str:
    """Verify an answered line and keep it as a Cosignature row; the outcome for the report."""
    name = member_key.member.name
    try:
        if isinstance(result, Exception):
            raise result
        timestamps = note.verify_cosignature(
            note.add_signatures(checkpoint.note, [result]), [member_key.verifier_key]
        )
        if name not in timestamps:
            raise note.NoteError(f"the cosignature is not by {name}")
    except _REFUSED as e:
        log.warning("witness %s did not cosign checkpoint %s: %s", name, checkpoint.size, e)
        return f"refused: {e}"
    try:
        with transaction.atomic():
            Cosignature.objects.create(
                checkpoint=checkpoint,
                member=member_key.member,
                key=member_key,
                timestamp=timestamps[name],
                line=result,
                received_at=timezone.now(),
            )
    except IntegrityError:
        pass  # a concurrent gatherer stored it first
    return "cosigned"


def _request_with_retry(member_key: MemberKey, checkpoint: Checkpoint, old_size: int) -> str:
    for _attempt in range(2):
        proof = proofs.consistency(old_size, checkpoint.size, sealed_size=checkpoint.size)
        try:
            return cosignature_request(
                member_key=member_key, note_text=checkpoint.note, old_size=old_size, proof=proof
            )
        except witness.SizeConflict as exc:
            if not _can_prove_from(exc, checkpoint, old_size):
                raise
            old_size = exc.size  # the witness is elsewhere; prove from where it is
    raise witness.SizeConflict("the witness keeps moving", size=old_size)


def _can_prove_from(exc: witness.SizeConflict, checkpoint: Checkpoint, old_size: int) -> bool:
    return exc.size is not None and exc.size <= checkpoint.size and exc.size != old_size


def _ask_remote(asked: list[tuple[MemberKey, int]], checkpoint: Checkpoint) -> dict[int, _Outcome]:
    """Ask the HTTP witnesses in parallel, as :func:`_request_with_retry` does one by one: proofs
    are read here (this thread, this transaction), only the HTTP calls run in the pool. A 409
    is answered with a proof from the size the witness reported, once."""
    results: dict[int, _Outcome] = {}
    if not asked:
        return results
    workers = min(conf.witness_parallel(), len(asked))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="witness") as pool:
        for _round in range(2):
            futures = {}
            for member_key, old_size in asked:
                try:
                    proof = proofs.consistency(
                        old_size, checkpoint.size, sealed_size=checkpoint.size
                    )
                except proofs.SizeError as exc:
                    results[member_key.pk] = exc
                    continue
                future = pool.submit(_ask_one, member_key, checkpoint.note, old_size, proof)
                futures[future] = (member_key, old_size)
            asked = []
            for future, (member_key, old_size) in futures.items():
                try:
                    results[member_key.pk] = future.result()
                except witness.SizeConflict as exc:
                    results[member_key.pk] = exc
                    if _can_prove_from(exc, checkpoint, old_size):
                        asked.append((member_key, exc.size))
                except _REFUSED as exc:
                    results[member_key.pk] = exc
            if not asked:
                break
    return results


def _ask_one(member_key: MemberKey, note_text: str, old_size: int, proof: list[bytes]) -> str:
    try:
        return cosignature_request(
            member_key=member_key, note_text=note_text, old_size=old_size, proof=proof
        )
    except witness.WitnessRefusal as exc:
        exc.sent = (old_size, proof)  # what was asked, should the refusal be fork evidence
        raise
    finally:
        connections.close_all()  # this pool thread's own connections, should it have opened any


def checkpoint_cosigners(checkpoint: Checkpoint) -> list[Cosignature]:
    return list(checkpoint.cosignatures.select_related("member").order_by("member__name"))


def checkpoint_is_final(checkpoint: Checkpoint) -> bool:
    """Cosigned by at least LEDGER_QUORUM configured witnesses. A cosignature counts if its key
    is live, or was revoked only after the cosignature arrived."""
    counted = checkpoint.cosignatures.filter(
        Q(key__revoked_at__isnull=True) | Q(key__revoked_at__gt=F("received_at"))
    )
    return counted.count() >= settings.LEDGER_QUORUM


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
