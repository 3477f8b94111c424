"""Writing a submitted claim: the claim row, its items, its event and its audit entry, together.

On PostgreSQL it is one statement (data-modifying ``WITH`` clauses, parameters bound by the
server), so one round trip and, in autocommit mode, its own durable commit: the claim ``INSERT …
ON CONFLICT (provider, idempotency_key) DO NOTHING RETURNING id``, and the items, the event and
the audit entry each ``INSERT … SELECT … FROM`` that claim, so they are written exactly when the
claim is. A taken Idempotency-Key writes nothing and the statement answers no row. Inside an outer
transaction the statement is part of it, as the ORM's writes would be.

Elsewhere (SQLite in development and tests) the ORM writes the same rows in a transaction.

Columns and values come from the models' own fields (``get_db_prep_save``), so a field added to
any of these models is written here without a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from django.db import IntegrityError, connection, transaction
from django.db.models import Field, Model
from django.db.models.fields import AutoFieldMixin

from audit.models import AuditEntry
from claims.auth import Guard, guard_holds, guard_params, guard_sql
from claims.db import binding_cursor
from claims.models import Claim, ClaimEvent, ClaimItem


def write(
    claim: Claim,
    items: Sequence[ClaimItem],
    event: ClaimEvent,
    entry: AuditEntry,
    guard: Guard | None = None,
) -> bool:
    """Store the claim and its rows; False (nothing written) when its Idempotency-Key is taken
    or, with a ``guard`` (a token remembered by this process, ``claims.auth``), when the token,
    its user or the user's provider link no longer is what the guard says, at the moment of the
    write. Sets the primary keys of ``claim`` and ``event``."""
    if connection.vendor == "postgresql":
        return _write_one_statement(claim, items, event, entry, guard)
    return _write_orm(claim, items, event, entry, guard)


def _write_orm(
    claim: Claim, items: Sequence[ClaimItem], event: ClaimEvent, entry, guard: Guard | None
) -> bool:
    try:
        with transaction.atomic():
            if guard is not None and not guard_holds(guard):
                return False
            claim.save(force_insert=True)
            for item in items:
                item.claim = claim
            ClaimItem.objects.bulk_create(items)
            event.claim = claim
            event.save(force_insert=True)
            entry.save(force_insert=True)
    except IntegrityError:
        if Claim.objects.filter(
            provider_id=claim.provider_id, idempotency_key=claim.idempotency_key
        ).exists():
            return False
        raise
    return True


# --- PostgreSQL: one statement ------------------------------------------------------------------


def _fields(model: type[Model], skip: str | None = None) -> list[Field]:
    """The columns an INSERT writes: every concrete field but an auto primary key (and ``skip``,
    the claim link that comes from the claim's own INSERT)."""
    return [
        f
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, AutoFieldMixin)) and f.name != skip
    ]


def _cast_type(field: Field) -> str:
    # Without the length: an explicit cast to varchar(n) would cut a long value silently, where
    # the column's own check refuses it.
    db_type = field.cast_db_type(connection)
    return "varchar" if db_type.startswith("varchar(") else db_type


def _placeholders(fields: list[Field]) -> str:
    # Typed, so that VALUES rows and SELECT lists need no inference from the target columns.
    return ", ".join(f"CAST(%s AS {_cast_type(f)})" for f in fields)


def _values(obj: Model, fields: list[Field]) -> list:
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


@cache
def _shape() -> tuple[list[Field], list[Field], list[Field], list[Field]]:
    return (
        _fields(Claim),
        _fields(ClaimItem, skip="claim"),
        _fields(ClaimEvent, skip="claim"),
        _fields(AuditEntry),
    )


@cache
def _sql(guarded: bool) -> str:
    qn = connection.ops.quote_name
    claim_f, item_f, event_f, audit_f = _shape()

    def cols(fields: list[Field]) -> str:
        return ", ".join(qn(f.column) for f in fields)

    claim_fk = qn(ClaimItem._meta.get_field("claim").column)
    event_fk = qn(ClaimEvent._meta.get_field("claim").column)
    provider_col = qn(Claim._meta.get_field("provider").column)
    key_col = qn(Claim._meta.get_field("idempotency_key").column)
    claim_pk, event_pk = qn(Claim._meta.pk.column), qn(ClaimEvent._meta.pk.column)
    rows_in = (
        f"SELECT {_placeholders(claim_f)} WHERE {guard_sql()}"
        if guarded
        else f"VALUES ({_placeholders(claim_f)})"
    )
    parts = [
        f"c AS (INSERT INTO {qn(Claim._meta.db_table)} ({cols(claim_f)}) {rows_in} "
        f"ON CONFLICT ({provider_col}, {key_col}) DO NOTHING RETURNING {claim_pk})",
        f"e AS (INSERT INTO {qn(ClaimEvent._meta.db_table)} ({event_fk}, {cols(event_f)}) "  # noqa: S608 (names from the models)
        f"SELECT c.{claim_pk}, {_placeholders(event_f)} FROM c RETURNING {event_pk})",
        f"a AS (INSERT INTO {qn(AuditEntry._meta.db_table)} ({cols(audit_f)}) "  # noqa: S608 (names from the models)
        f"SELECT {_placeholders(audit_f)} FROM c)",
    ]
    # the items as one array per column: the same statement whatever their number (psycopg
    # caches its parsing, PostgreSQL its plan) and 8 parameters, not 8 per item
    arrays = ", ".join(f"CAST(%s AS {_cast_type(f)}[])" for f in item_f)
    parts.append(
        f"i AS (INSERT INTO {qn(ClaimItem._meta.db_table)} ({claim_fk}, {cols(item_f)}) "  # noqa: S608 (names from the models)
        f"SELECT c.{claim_pk}, u.* FROM c, unnest({arrays}) AS u)"
    )
    return f"WITH {', '.join(parts)} SELECT c.{claim_pk}, e.{event_pk} FROM c, e"  # noqa: S608 (names from the models)


def _write_one_statement(
    claim: Claim,
    items: Sequence[ClaimItem],
    event: ClaimEvent,
    entry: AuditEntry,
    guard: Guard | None,
) -> bool:
    claim_f, item_f, event_f, audit_f = _shape()
    params = _values(claim, claim_f)
    if guard is not None:
        params += guard_params(guard)
    params += _values(event, event_f) + _values(entry, audit_f)
    rows = [_values(item, item_f) for item in items]
    params += [[row[k] for row in rows] for k in range(len(item_f))]
    # 44 parameters (49 guarded): psycopg caches the parsing of statements of at most 50
    with binding_cursor() as cursor:
        cursor.execute(_sql(guard is not None), params)
        row = cursor.fetchone()
    if row is None:
        return False
    claim.pk, event.pk = row
    for obj in (claim, event, entry):
        obj._state.adding = False
        obj._state.db = connection.alias
    for item in items:
        item.claim = claim
    event.claim = claim
    return True
