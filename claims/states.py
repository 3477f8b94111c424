"""Claim states and the one function allowed to move a claim between them.

Nothing else writes ``Claim.status``: not views, not tasks, not the admin. A transition is a
compare-and-set (the row moves only from the state we read), recorded as one ``ClaimEvent`` with
who, why and a snapshot, and one audit trail entry (action ``claim.status``), in the same
transaction. ``claim_transitions_many`` does the same for many claims in a constant number of
statements (a verification batch).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from config.bulk import insert_rows


class ClaimStatus(models.TextChoices):
    RECEIVED = "received", "received"
    VERIFYING = "verifying", "verifying"
    VERIFIED = "verified", "verified"
    NEEDS_REVIEW = "needs_review", "needs review"
    REJECTED = "rejected", "rejected"
    INFO_REQUESTED = "info_requested", "information requested"
    APPROVED = "approved", "approved"
    DENIED = "denied", "denied"
    PAID = "paid", "paid"
    SUPERSEDED = "superseded", "superseded by a correction"
    VOIDED = "voided", "voided"


S = ClaimStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    S.RECEIVED: frozenset({S.VERIFYING, S.SUPERSEDED, S.VOIDED}),
    # Verification may wait (checkpoint not final yet) and run again: verifying -> verifying.
    S.VERIFYING: frozenset({S.VERIFYING, S.VERIFIED, S.NEEDS_REVIEW, S.REJECTED}),
    S.VERIFIED: frozenset(
        {
            S.APPROVED,
            S.DENIED,
            S.INFO_REQUESTED,
            S.VERIFYING,
            S.SUPERSEDED,
            S.VOIDED,
            S.NEEDS_REVIEW,
        }
    ),
    S.NEEDS_REVIEW: frozenset(
        {S.APPROVED, S.DENIED, S.INFO_REQUESTED, S.VERIFYING, S.SUPERSEDED, S.VOIDED}
    ),
    S.INFO_REQUESTED: frozenset({S.NEEDS_REVIEW, S.VERIFYING, S.DENIED, S.SUPERSEDED, S.VOIDED}),
    S.REJECTED: frozenset({S.VERIFYING, S.SUPERSEDED, S.VOIDED}),
    # approved -> verifying: a batch job re-verifies an approved claim not paid yet (after a
    # backdated key revocation, say). Its verdict unchanged, the claim goes back to approved;
    # changed, to needs_review, and the job voids its payout (jobs.services).
    S.APPROVED: frozenset({S.PAID, S.VERIFYING}),
    S.DENIED: frozenset(),
    S.PAID: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.VOIDED: frozenset(),
}
# States in which a claim still bills its procedures (the double-billing index covers these).
LIVE = frozenset(set(S) - {S.REJECTED, S.DENIED, S.SUPERSEDED, S.VOIDED})
FINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class InvalidTransition(Exception):
    def __init__(self, old: str, new: str):
        super().__init__(f"a claim cannot go from {old} to {new}")
        self.old, self.new = old, new


class ConcurrentTransition(Exception):
    """Someone else moved the claim first; nothing was changed."""


def claim_transition(*, claim, to: str, actor=None, reason: str = "", snapshot: dict | None = None):
    """Move ``claim`` to ``to`` if the table allows it and nobody moved it since it was read."""
    return claim_transitions(claim=claim, steps=[(to, reason, snapshot)], actor=actor)


def claim_transitions(
    *,
    claim,
    steps: list[tuple[str, str, dict | None]],
    actor=None,
    fields: dict | None = None,
):
    """Move ``claim`` through ``steps`` (to, reason, snapshot), each allowed by the table from
    the one before, in one UPDATE (which also writes ``fields``, other columns of the claim)
    and one INSERT of a ``ClaimEvent`` per step: what a verification run does on its way from
    received through verifying to its verdict."""
    from audit.models import AuditEntry
    from audit.services import ENTRY_FIELDS
    from claims.models import BilledAnchor, Claim, ClaimEvent

    old = at = claim.status
    leaves_live = False
    for to, _, _ in steps:
        if to not in TRANSITIONS.get(at, frozenset()):
            raise InvalidTransition(at, to)
        leaves_live |= at in LIVE and to not in LIVE
        at = to
    values = {"updated_at": timezone.now(), **(fields or {}), "status": at}
    actor_id = _actor_id(actor)
    # savepoint=False saves two round trips inside a caller's transaction; nothing inside raises
    # on the expected path, so a caller catching ConcurrentTransition keeps a usable transaction.
    with transaction.atomic(savepoint=False):
        moved = Claim.objects.filter(pk=claim.pk, status=old).update(**values)
        if moved == 1:
            if leaves_live:
                BilledAnchor.objects.filter(claim_id=claim.pk).update(live=False)
            events, before, at = [], old, values["updated_at"]
            for to, reason, snapshot in steps:
                events.append((claim.pk, at, actor_id, before, to, reason, snapshot or {}))
                before = to
            insert_rows(ClaimEvent, EVENT_FIELDS, events)
            insert_rows(AuditEntry, ENTRY_FIELDS, _audit_entries(claim, old, steps, actor, at))
    if moved != 1:
        raise ConcurrentTransition(f"claim {claim.pk} is no longer {old}")
    for name, value in values.items():
        setattr(claim, name, value)
    return claim


Step = tuple[str, str, dict | None]  # to, reason, snapshot
Move = tuple[Any, Sequence[Step], dict | None]  # claim, steps, fields
_CHUNK = 500  # moves per UPDATE: far below either database's limit on parameters


def claim_transitions_many(moves: Sequence[Move], *, actor=None) -> list:
    """Move many claims at once, each as :func:`claim_transitions` would move it (same rows:
    the claim's columns, one ``ClaimEvent`` and one audit entry per step, its billed anchors
    released when it leaves a live state), in a constant number of statements: one
    ``UPDATE ... FROM (VALUES ...)`` whose compare-and-set is each row's old status, one INSERT
    of the events, one of the audit entries, one UPDATE of the anchors.

    ``moves`` are (claim, steps, fields); a move with no steps writes only its fields (still
    compare-and-set). Every step is checked against the table first: ``InvalidTransition``
    raises before anything is written. Returns the claims that did not move because someone
    moved them first (what ``ConcurrentTransition`` says for one claim): nothing was written
    for them and they are left as they were; the others are updated in place.
    """
    from audit.models import AuditEntry
    from audit.services import ENTRY_FIELDS
    from claims.models import BilledAnchor, ClaimEvent

    planned = []  # (claim, old, steps, values, leaves live)
    seen: set[int] = set()
    for claim, steps, fields in moves:
        if claim.pk in seen:
            raise ValueError(f"claim {claim.pk} is moved twice in one call")
        seen.add(claim.pk)
        old = at = claim.status
        leaves_live = False
        for to, _, _ in steps:
            if to not in TRANSITIONS.get(at, frozenset()):
                raise InvalidTransition(at, to)
            leaves_live |= at in LIVE and to not in LIVE
            at = to
        values = {"updated_at": timezone.now(), **(fields or {}), "status": at}
        planned.append((claim, old, list(steps), values, leaves_live))
    if not planned:
        return []
    if not _update_from_returns():  # SQLite before 3.35: no RETURNING, one claim at a time
        return _one_by_one(planned, actor)

    with transaction.atomic(savepoint=False):
        moved: set[int] = set()
        for start in range(0, len(planned), _CHUNK):
            moved |= _update_many(planned[start : start + _CHUNK])
        done = [p for p in planned if p[0].pk in moved]
        releasing = [claim.pk for claim, *_, leaves_live in done if leaves_live]
        if releasing:
            BilledAnchor.objects.filter(claim_id__in=releasing).update(live=False)
        events, entries = [], []
        actor_id = _actor_id(actor)
        for claim, old, steps, values, _ in done:
            before, now = old, values["updated_at"]
            for to, reason, snapshot in steps:
                events.append((claim.pk, now, actor_id, before, to, reason, snapshot or {}))
                before = to
            entries += _audit_entries(claim, old, steps, actor, now)
        insert_rows(ClaimEvent, EVENT_FIELDS, events)
        insert_rows(AuditEntry, ENTRY_FIELDS, entries)
    for claim, _, _, values, _ in done:
        for name, value in values.items():
            setattr(claim, name, value)
    return [claim for claim, *_ in planned if claim.pk not in moved]


def _update_from_returns() -> bool:
    """UPDATE ... FROM ... RETURNING: PostgreSQL, and SQLite from 3.35."""
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return connection.vendor == "postgresql"


def _one_by_one(planned: list, actor) -> list:
    lost = []
    with transaction.atomic(savepoint=False):
        for claim, _, steps, values, _ in planned:
            fields = {k: v for k, v in values.items() if k != "status"}
            try:
                claim_transitions(claim=claim, steps=steps, fields=fields, actor=actor)
            except ConcurrentTransition:
                lost.append(claim)
    return lost


_MODIFIERS = re.compile(r"\(\d+(,\s*\d+)?\)")  # varchar(20) -> varchar, numeric(12, 2) -> numeric


def _update_many(planned: list) -> set[int]:
    """One compare-and-set UPDATE for ``planned``; the ids of the rows it moved.

    Columns: id, old status, then each written column; a column that not every move writes
    comes with a flag column (CASE keeps the row's own value where the flag is false). On
    PostgreSQL each column is one array parameter typed as its claims_claim column and
    ``unnest``-ed (psycopg binds a few arrays much faster than thousands of placeholders); on
    SQLite a ``VALUES`` list.
    """
    from claims.models import Claim

    opts = Claim._meta
    names = list(dict.fromkeys(name for *_, values, _ in planned for name in values))
    everywhere = {n for n in names if all(n in values for *_, values, _ in planned)}
    pg = connection.vendor == "postgresql"
    quote = connection.ops.quote_name
    table = quote(opts.db_table)
    pk = opts.pk
    status = opts.get_field("status")
    # The VALUES columns, one list each, and their database types.
    columns: list[list] = [[pk.get_db_prep_value(c.pk, connection) for c, *_ in planned],
                           [old for _, old, *_ in planned]]  # fmt: skip
    types = [pk.db_type(connection), status.db_type(connection)]
    sets = []
    for name in names:
        field = opts.get_field(name)
        values = []
        for _, _, _, given, _ in planned:
            value = given.get(name)
            if field.is_relation and isinstance(value, models.Model):
                value = value.pk
            values.append(field.get_db_prep_save(value, connection) if name in given else None)
        columns.append(values)
        types.append(field.db_type(connection))
        value = f"v.column{len(columns)}"
        if name not in everywhere:
            columns.append([name in given for *_, given, _ in planned])
            types.append("boolean")
            flag = f"v.column{len(columns)}"
            value = f"CASE WHEN {flag} THEN {value} ELSE {table}.{quote(field.column)} END"
        sets.append(f"{quote(field.column)} = {value}")
    if pg:  # one array per column: the statement's text is the same for any number of claims
        names_ = ", ".join(f"column{i}" for i in range(1, len(columns) + 1))
        # the base type: a cast to varchar(20)[] would cut a longer value short where the
        # column itself refuses it
        arrays = ", ".join(f"%s::{_MODIFIERS.sub('', t)}[]" for t in types)
        source, params = f"unnest({arrays}) AS v({names_})", columns
    else:
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        source = f"(VALUES {', '.join([row] * len(planned))}) AS v"
        params = [value for values in zip(*columns, strict=True) for value in values]
    # Every name in the text comes from the model's options; every value is a parameter.
    sql = (
        f"UPDATE {table} SET {', '.join(sets)} "  # noqa: S608
        f"FROM {source} "
        f"WHERE {table}.{quote(pk.column)} = v.column1 "
        f"AND {table}.{quote(status.column)} = v.column2 "
        f"RETURNING {table}.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _actor_id(actor) -> int | None:
    return actor.pk if getattr(actor, "pk", None) else None


# A ClaimEvent's columns as written (config.bulk.insert_rows).
EVENT_FIELDS = ("claim_id", "at", "actor_id", "old_status", "new_status", "reason", "snapshot")


def _audit_entries(claim, old: str, steps: list[tuple[str, str, dict | None]], actor, now):
    """One audit entry per step (verdicts, approvals, denials, payments...): who, why, from and to,
    and the step's snapshot when it has a canonical JSON form (it always has in this code base;
    an odd one is left out rather than failing the transition). Rows of ``ENTRY_FIELDS``."""
    from audit.services import audit_values

    entries, before, target = [], old, f"claim:{claim.public_id}"
    for to, reason, snapshot in steps:
        data = {"from": str(before), "to": str(to)}
        if snapshot:
            data["snapshot"] = snapshot
        try:
            entry = audit_values(
                actor=actor, action="claim.status", target=target, why=reason, data=data, at=now
            )
        except (TypeError, ValueError):
            data["snapshot"] = "(not recorded: it has no canonical JSON form)"
            entry = audit_values(
                actor=actor, action="claim.status", target=target, why=reason, data=data, at=now
            )
        entries.append(entry)
        before = to
    return entries
