"""A witness hosted on this node: C2SP tlog-witness ``add-checkpoint`` semantics, in process.

The witness cosigns a checkpoint only if the log signed it and a consistency proof leads from the
last checkpoint this witness cosigned for that log. Its memory (:class:`WitnessState`) advances by
compare-and-swap, so two concurrent requests can never make it cosign two trees of one size.
The swap is one statement, committed (outside a transaction) before the cosignature is made; a
per-process hint of each log's state saves the read in the usual case but never decides alone
(docs/consortium.md, "How the witness decides").
Refusals mirror the protocol's answers, so the HTTP witness of the consortium issue wraps this.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import InterfaceError, OperationalError, connections, router
from django.utils import timezone

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
        # The ForkEvidence kind when this refusal shows the log signed two histories.
        self.evidence: str | None = None


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
    checkpoint: Checkpoint | None = None,
) -> str:
    """Cosign ``note_text`` if it extends what this witness last cosigned; return the line.

    ``log_verifier_keys`` maps each log origin this witness follows to the log's verifier key
    (or a list of them: a signature by any one of them will do). ``checkpoint``: the body of
    ``note_text`` already parsed by the caller (the HTTP handler parses it to tell a malformed
    request from a refusal); the log's signature is still checked over ``note_text`` itself.
    """
    prepared = prepare_add_checkpoint(
        witness_signer_key=witness_signer_key,
        log_verifier_keys=log_verifier_keys,
        old_size=old_size,
        proof=proof,
        note_text=note_text,
        checkpoint=checkpoint,
    )
    return add_prepared(prepared, timestamp=timestamp)


@dataclass(frozen=True)
class Prepared:
    """An add-checkpoint request whose log signature and old size are checked: what is left is
    the decision against the witness's state (:func:`add_prepared`, or a caller's own
    compare-and-swap from :func:`swap_from`) and the cosignature (:func:`cosign_prepared`)."""

    witness_signer_key: str
    witness: str
    alias: str
    checkpoint: Checkpoint
    old_size: int
    proof: list[bytes]
    note_text: str
    implied_root: bytes | None  # the old tree's root the proof names (None: it does not)


def prepare_add_checkpoint(
    *,
    witness_signer_key: str,
    log_verifier_keys: dict[str, str] | dict[str, list[str]],
    old_size: int,
    proof: list[bytes],
    note_text: str,
    checkpoint: Checkpoint | None = None,
) -> Prepared:
    """The checks that need no state: a checkpoint of a log it follows, signed by that log's
    key, an old size not above its size. Raises the refusal otherwise (no database access)."""
    cp = checkpoint
    if cp is None:
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
    return Prepared(
        witness_signer_key=witness_signer_key,
        witness=_witness_name(witness_signer_key),
        alias=router.db_for_write(WitnessState),
        checkpoint=cp,
        old_size=old_size,
        proof=proof,
        note_text=note_text,
        implied_root=_implied_old_root(old_size, cp.size, cp.root_hash, proof),
    )


def cosign_prepared(prepared: Prepared, timestamp: int | None = None) -> str:
    """The witness's cosignature line: only once its state holds the checkpoint, committed."""
    when = int(time.time()) if timestamp is None else timestamp
    return note.cosign(prepared.checkpoint.body(), prepared.witness_signer_key, when)


def swap_from(prepared: Prepared) -> tuple[bool, int, bytes] | None:
    """The state (exists, size, root) a compare-and-swap to the checkpoint may start from
    without reading the row first: the tree the proof names, else this process's hint when the
    request holds against it. None: read the row and decide (:func:`add_prepared`). A swap from
    it is the whole decision only when it matches the row."""
    if prepared.implied_root is not None:
        return (prepared.old_size > 0, prepared.old_size, prepared.implied_root)
    cp = prepared.checkpoint
    state = _STATES.get((prepared.alias, prepared.witness, cp.origin))
    if state is None:
        return None
    try:
        _check(state, cp, prepared.old_size, prepared.proof)
    except WitnessRefusal:
        return None
    return (state.exists, state.size, state.root)


def swapped(prepared: Prepared) -> None:
    """Remember that the row now holds the checkpoint (a hint, as after this module's swap)."""
    cp = prepared.checkpoint
    _STATES[(prepared.alias, prepared.witness, cp.origin)] = _State(
        True, cp.size, cp.root_hash, None
    )


def add_prepared(prepared: Prepared, *, timestamp: int | None = None) -> str:
    """Decide ``prepared`` against the witness's state, move it and cosign (one statement per
    swap, outside a transaction: committed before the cosignature is made)."""
    alias, witness, cp = prepared.alias, prepared.witness, prepared.checkpoint
    old_size, proof, note_text = prepared.old_size, prepared.proof, prepared.note_text
    key = (alias, witness, cp.origin)
    implied = prepared.implied_root
    if implied is not None:
        # The proof itself names the tree it leads from: swap from exactly that tree, one
        # statement, whatever this process remembers (another worker may have moved the row).
        if _swap(alias, witness, cp, _State(old_size > 0, old_size, implied, None), note_text):
            _STATES[key] = _State(True, cp.size, cp.root_hash, None)
            return cosign_prepared(prepared, timestamp)
        state, fresh = _state_read(alias, witness, cp.origin), True
    else:
        state = _STATES.get(key)
        fresh = state is None
        if state is None:
            state = _state_read(alias, witness, cp.origin)
    for _attempt in range(_ATTEMPTS):
        try:
            _check(state, cp, old_size, proof)
        except WitnessRefusal as exc:
            if not fresh:  # decided on this process's memory: ask the database before refusing
                state, fresh = _state_read(alias, witness, cp.origin), True
                continue
            _STATES[key] = state
            _refuse(exc, state, cp, witness, old_size, proof, note_text)
            raise
        if _swap(alias, witness, cp, state, note_text):
            _STATES[key] = _State(True, cp.size, cp.root_hash, None)
            break
        # Another request (or node process) moved this witness since: decide again on its state.
        state, fresh = _state_read(alias, witness, cp.origin), True
    else:
        _STATES.pop(key, None)
        raise SizeConflict("another request advanced this witness first", size=state.size)
    return cosign_prepared(prepared, timestamp)


# --- the witness's memory: one row per (witness, log), read and swapped in raw SQL ---------------


@dataclass(frozen=True)
class _State:
    exists: bool  # False: never cosigned this log (size 0, the empty tree)
    size: int
    root: bytes
    note: str | None  # the note it last cosigned (None when known from this process's memory)


_EMPTY = _State(False, 0, merkle.EMPTY_ROOT, "")
_ATTEMPTS = 4
# (database alias, witness, origin) -> what this process last saw or wrote. Only a hint: every
# advance is a compare-and-swap on the row, and every refusal is decided on a fresh read.
_STATES: dict[tuple[str, str, str], _State] = {}


@lru_cache(maxsize=64)
def _witness_name(witness_signer_key: str) -> str:
    return note.verifier_key(witness_signer_key).split("+", 1)[0]


# The table is WitnessState's (``ledger_witnessstate``); the statements are constants.
_READ = "SELECT size, root_hash, note FROM ledger_witnessstate WHERE witness = %s AND origin = %s"
_UPDATE = (
    "UPDATE ledger_witnessstate SET size = %s, root_hash = %s, note = %s, updated_at = %s "
    "WHERE witness = %s AND origin = %s AND size = %s AND root_hash = %s"
)
_INSERT = (
    "INSERT INTO ledger_witnessstate (witness, origin, size, root_hash, note, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (witness, origin) DO NOTHING"
)


def _execute(alias: str, sql: str, params: list) -> tuple[int, tuple | None]:
    """Run one statement: (rows affected, first row). Outside a transaction the statement is its
    own health check (Django's ``CONN_HEALTH_CHECKS`` would spend a ``SELECT 1`` round trip on
    it): a connection found dead is closed and the statement run once more on a new one. That
    is safe for the swap too: if the first attempt did commit, the second matches no row and the
    caller reads the state again.

    On PostgreSQL the statement goes through a plain psycopg cursor of Django's connection with
    server-side binding, not through Django's client-side binding cursor: the same statement
    and transaction, less work. ``prepare=True`` makes it a prepared statement only where
    ``OPTIONS`` sets ``prepare_threshold``: Django opens connections with psycopg's preparing
    off (for connection poolers), and the connection is shared with other modules' statements,
    so the witness leaves that setting alone."""
    connection = connections[alias]
    reuse = connection.connection is not None and not connection.in_atomic_block
    if reuse:
        connection.health_check_done = True
    for attempt in range(2):
        try:
            if connection.vendor == "postgresql":
                cursor = _raw_cursor(alias, connection)
                cursor.execute(sql, params, prepare=True)
                return cursor.rowcount, cursor.fetchone() if cursor.description else None
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount, cursor.fetchone() if cursor.description else None
        except _CONNECTION_ERRORS:
            if attempt or not reuse or connection.in_atomic_block:
                raise
            connection.close()
    raise AssertionError("unreachable")


def _raw_cursor(alias: str, connection) -> Any:
    """This thread's psycopg cursor on Django's open connection for ``alias`` (made anew when
    Django reconnects)."""
    connection.ensure_connection()
    raw = connection.connection
    cursors = _LOCAL.__dict__.setdefault("cursors", {})
    cursor = cursors.get(alias)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        import psycopg

        cursor = cursors[alias] = psycopg.Cursor(raw)
    return cursor


def _connection_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return (OperationalError, InterfaceError)
    return (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


_CONNECTION_ERRORS = _connection_errors()
_LOCAL = threading.local()


def _state_read(alias: str, witness: str, origin: str) -> _State:
    _count, row = _execute(alias, _READ, [witness, origin])
    if row is None:
        return _EMPTY
    return _State(True, int(row[0]), bytes(row[1]), row[2])


def _implied_old_root(
    old_size: int, new_size: int, new_root: bytes, proof: list[bytes]
) -> bytes | None:
    """The root of the tree of ``old_size`` that ``proof`` proves the checkpoint extends, when
    the proof names it (RFC 9162 section 2.1.4.2 computes it on the way to the new root): then
    a compare-and-swap from (old_size, that root) is the whole decision, no read first. None when
    the proof does not hold, or the old size is a power of two (the proof then leaves the old
    root out: the verifier must know it).

    The walk is :func:`merkle.verify_consistency`'s, step for step, with the old root taken from
    the proof instead of compared with it: the root it returns is one that check accepts (its
    other checks, 32-byte hashes and sizes in order, are made here too), so it is not run a
    second time. tests/ledger/test_witness.py holds the two to each other."""
    if not 0 <= old_size <= new_size <= merkle.MAX_SIZE or len(proof) > 2 * 64:
        return None
    if len(new_root) != merkle.HASH_SIZE or any(len(h) != merkle.HASH_SIZE for h in proof):
        return None
    if old_size == new_size or old_size == 0:
        if proof:
            return None
        return new_root if old_size == new_size else merkle.EMPTY_ROOT
    if not proof or old_size & (old_size - 1) == 0:
        return None
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = merkle.node_hash(c, fr)
            sr = merkle.node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = merkle.node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or sr != new_root:
        return None
    return fr


def _check(state: _State, cp: Checkpoint, old_size: int, proof: list[bytes]) -> None:
    """Raise the refusal the protocol gives for this request against ``state``."""
    if cp.size == state.size and cp.root_hash != state.root:
        # Whatever the old size: two trees of one size signed by the log is a fork.
        exc = SizeConflict(
            f"a different tree of size {cp.size} was already cosigned", size=state.size
        )
        exc.evidence = ForkEvidence.Kind.SPLIT_VIEW
        raise exc
    if old_size != state.size:
        raise SizeConflict(
            f"this witness last cosigned size {state.size}, not {old_size}", size=state.size
        )
    try:
        merkle.verify_consistency(old_size, cp.size, state.root, cp.root_hash, proof)
    except merkle.ProofError as err:
        exc = BadProof(f"the consistency proof does not hold: {err}")
        exc.evidence = ForkEvidence.Kind.BAD_PROOF
        raise exc from err


def _swap(alias: str, witness: str, cp: Checkpoint, state: _State, note_text: str) -> bool:
    """Compare-and-swap the row from ``state`` to the checkpoint: one statement, so outside a
    transaction it is committed (durable) before this returns. False if the row is not ``state``."""
    now = connections[alias].ops.adapt_datetimefield_value(timezone.now())
    if state.exists:
        params = [cp.size, cp.root_hash, note_text, now, witness, cp.origin, state.size, state.root]
        count, _row = _execute(alias, _UPDATE, params)
    else:
        params = [witness, cp.origin, cp.size, cp.root_hash, note_text, now]
        count, _row = _execute(alias, _INSERT, params)
    return count == 1


def _refuse(
    exc: WitnessRefusal,
    state: _State,
    cp: Checkpoint,
    witness: str,
    old_size: int,
    proof: list[bytes],
    note_text: str,
) -> None:
    """Keep fork evidence for a refusal that shows two histories signed by the log."""
    if exc.evidence is None:
        return
    forks.fork_record(
        origin=cp.origin,
        witness=witness,
        reported_by=ForkEvidence.Reporter.WITNESS,
        kind=exc.evidence,
        cosigned_size=state.size,
        cosigned_root=state.root,
        cosigned_note=state.note or "",
        conflicting_size=cp.size,
        conflicting_root=cp.root_hash,
        conflicting_note=note_text,
        old_size=old_size,
        proof=proof,
        detail=exc.detail,
    )
