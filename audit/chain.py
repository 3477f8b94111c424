"""Chaining the audit trail and anchoring its head on the ledger (docs/audit-trail.md).

``entry_bytes``, ``entry_hash`` and ``head_commitment`` are the exact byte formats a verifier
recomputes; :func:`audit_chain` is what every seal of the ledger runs first.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _escape

import psycopg
import rfc8785
from django.db import connection, transaction
from django.utils import timezone

from audit import conf
from audit.models import AuditEntry, ChainAnchor
from config.errors import DomainError
from ledger import anchor
from ledger.jcs import canonical

log = logging.getLogger(__name__)

GENESIS = bytes(32)  # the "previous hash" of entry 1
HEAD_CONTEXT = b"claimproof-audit-head/v1\n"
# The recorded fields, in the order values_list reads them.
FIELDS = ("id", "at", "actor_id", "actor_label", "action", "target", "why", "data")


def timestamp(at: datetime) -> str:
    """An entry's time as hashed: RFC 3339 UTC to the microsecond (2026-11-25T10:36:05.123456Z)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_bytes(
    *,
    seq: int,
    id: int,
    at: datetime,
    actor_id: int | None,
    actor_label: str,
    action: str,
    target: str,
    why: str,
    data: dict,
) -> bytes:
    """RFC 8785 canonical JSON of an entry as chained: every recorded field, and its place."""
    # The members in RFC 8785 order (sorted ASCII names), written directly: the hot path.
    if actor_id is not None and not isinstance(actor_id, int):
        raise TypeError("actor is an integer id or null")
    return (
        f'{{"action":{_escape(action)},"actor":{"null" if actor_id is None else actor_id},'
        f'"actor_label":{_escape(actor_label)},"at":"{timestamp(at)}",'
        f'"data":{canonical(data).decode("utf-8")},"id":{int(id)},"seq":{int(seq)},'
        f'"target":{_escape(target)},"why":{_escape(why)}}}'
    ).encode()


def entry_hash(prev: bytes, canonical: bytes) -> bytes:
    """``SHA-256(prev_hash || canonical entry)``: each entry commits to all before it."""
    return hashlib.sha256(prev + canonical).digest()


def head_commitment(seq: int, head: bytes) -> bytes:
    """The 32-byte commitment of an anchor leaf: ``SHA-256("claimproof-audit-head/v1\\n" ||
    JCS({"head": hex, "seq": seq}))``."""
    return hashlib.sha256(HEAD_CONTEXT + rfc8785.dumps({"head": head.hex(), "seq": seq})).digest()


def row_hash(seq: int, prev: bytes, row: tuple) -> bytes:
    return entry_hash(prev, entry_bytes(seq=seq, **dict(zip(FIELDS, row, strict=True))))


@dataclass(frozen=True)
class ChainResult:
    chained: int  # entries chained by this call
    head_seq: int  # the chain's length afterwards
    anchor: ChainAnchor | None  # the anchor written by this call, if any


_STATE_SQL = (
    "SELECT (SELECT MIN(id) FROM audit_auditentry WHERE seq IS NULL), "
    "(SELECT MAX(seq) FROM audit_auditentry), (SELECT MAX(seq) FROM audit_chainanchor)"
)


def _nothing_to_do() -> bool:
    """One indexed round trip: no entry waits to be chained and the head is anchored."""
    with connection.cursor() as cursor:
        cursor.execute(_STATE_SQL)
        unchained, head_seq, anchored_seq = cursor.fetchone()
    return unchained is None and (head_seq or 0) == (anchored_seq or 0)


def _lock() -> None:
    """Serialise chaining (the ledger's named-row lock; SQLite serialises writers anyway)."""
    from ledger.models import LedgerLock

    LedgerLock.objects.select_for_update().get_or_create(name="audit-chain")


def _write(updates: list[tuple[int, int, bytes]]) -> None:
    """Give each (id, seq, hash) its place: one UPDATE on PostgreSQL, its arrays sent as binary
    parameters (not as quoted text, as Django's client-side binding would)."""
    if not updates:
        return
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                "UPDATE audit_auditentry e SET seq = v.seq, hash = v.hash "
                "FROM unnest(%b::bigint[], %b::bigint[], %b::bytea[]) AS v(id, seq, hash) "
                "WHERE e.id = v.id AND e.seq IS NULL",
                [[u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates]],
                binary=True,
            )
            count = cursor.rowcount
    else:
        with connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE audit_auditentry SET seq = %s, hash = %s WHERE id = %s AND seq IS NULL",
                [(seq, h, id_) for id_, seq, h in updates],
            )
            count = cursor.rowcount
    if count not in (-1, len(updates)):
        raise RuntimeError("an entry was chained concurrently: is the chain lock bypassed?")


def audit_chain(*, now: datetime | None = None) -> ChainResult | None:
    """Chain the entries written since the last call, in id order, and anchor the new head.

    Run by every seal of the ledger, before the checkpoint is signed, so the anchor leaf is in
    that checkpoint. Its own transaction: the ledger's append counter is held only for the few
    statements after the anchor is appended. Returns None when there was nothing to do.
    """
    if _nothing_to_do():
        return None
    now = now or timezone.now()
    with transaction.atomic():
        _lock()
        last = (
            AuditEntry.objects.filter(seq__isnull=False)
            .order_by("-seq")
            .values_list("seq", "hash")[:1]
        )
        head_seq, head = (last[0][0], bytes(last[0][1])) if last else (0, GENESIS)
        rows = (
            AuditEntry.objects.filter(seq__isnull=True)
            .order_by("id")
            .values_list(*FIELDS)[: conf.chain_batch()]
        )
        updates = []
        for row in rows:
            head_seq += 1
            head = row_hash(head_seq, head, row)
            updates.append((row[0], head_seq, head))
        _write(updates)
        anchored = ChainAnchor.objects.order_by("-seq").values_list("seq", flat=True).first()
        written = None
        if head_seq and head_seq != (anchored or 0):
            written = _anchor(head_seq, head, now)
    return ChainResult(len(updates), head_seq, written)


def _anchor(seq: int, head: bytes, now: datetime) -> ChainAnchor | None:
    """Append one leaf committing to the head; None (and a warning) when this node cannot sign."""
    from ledger import services

    signer = conf.anchor_signer_key()
    if signer is None:
        log.warning(
            "audit trail head #%s not anchored: no anchor key for member %s (AUDIT_ANCHOR_KEY or "
            "var/keys/members/<member>.key)",
            seq,
            conf.anchor_member(),
        )
        return None
    statement = anchor.statement_sign(
        commitment=head_commitment(seq, head), signer_key=signer, timestamp=now
    )
    try:
        result = services.anchor_append(data=statement, now=now)
    except DomainError as exc:
        log.warning("audit trail head #%s not anchored: %s", seq, exc.detail)
        return None
    return ChainAnchor.objects.create(
        seq=seq,
        head=head,
        leaf_index=result.leaf.index,
        member=result.leaf.member,
        anchored_at=now,
    )
