"""Writing a submitted claim: the claim row, its items, its event and its audit entry, together.

On PostgreSQL it is one statement (data-modifying ``WITH`` clauses, parameters bound by the
server), so one round trip and, in autocommit mode, its own durable commit: the claim ``INSERT …
ON CONFLICT (provider, idempotency_key) DO NOTHING RETURNING id``, and the items, the event and
the audit entry each ``INSERT … SELECT … FROM`` that claim, so they are written exactly when the
claim is. A taken Idempotency-Key writes nothing and the statement answers no row. Inside an outer
transaction the statement is part of it, as the ORM's writes would be.

Elsewhere (SQLite in development and tests) the ORM writes the same rows in a transaction.

The rows are plain dicts of field values by ``attname`` (no model instance is built on the request
path); :func:`fill` completes one with the model's defaults, as ``Model.__init__`` would. Columns
come from the models' own fields and each value is prepared as ``get_db_prep_save`` prepares it
(skipped only for field types whose preparation on PostgreSQL returns the value as it is), so a
field added to any of these models is written here without a change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Field, Model
from django.db.models.fields import AutoFieldMixin

from audit.models import AuditEntry
from claims.auth import Guard, guard_holds, guard_params, guard_sql
from claims.db import fetch_one
from claims.models import Claim, ClaimEvent, ClaimItem

Row = dict[str, Any]  # field values by attname

# Field types whose get_db_prep_save on PostgreSQL returns a value of the field's own Python type
# unchanged (Django 5.2: the backend's adapt_* for these are the identity, and psycopg adapts
# the Python values itself). Any other type (JSONField: Jsonb) goes through get_db_prep_save.
_AS_IS = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BinaryField",
        "BooleanField",
        "CharField",
        "DateTimeField",
        "DecimalField",
        "ForeignKey",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
        "UUIDField",
    }
)


def fill(model: type[Model], values: Row) -> Row:
    """``values`` completed with the defaults of the model's other columns (a callable default,
    such as ``uuid4``, is called), as ``Model.__init__`` fills an instance."""
    out = dict(values)
    for name, default in _defaults(model):
        if name not in out:
            out[name] = default()
    return out


@cache
def _defaults(model: type[Model]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    return tuple(
        (f.attname, f.get_default)
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, AutoFieldMixin))
    )


def write(claim: Row, items: Sequence[Row], event: Row, entry: Row, guard: Guard | None = None):
    """Store the claim and its rows (each filled by :func:`fill`); the ids of the claim and the
    event, or None (nothing written) when its Idempotency-Key is taken or, with a ``guard`` (a
    token remembered by this process, ``claims.auth``), when the token, its user or the user's
    provider link no longer is what the guard says, at the moment of the write."""
    if connection.vendor == "postgresql":
        return _write_one_statement(claim, items, event, entry, guard)
    return _write_orm(claim, items, event, entry, guard)


def _write_orm(claim: Row, items: Sequence[Row], event: Row, entry: Row, guard: Guard | None):
    try:
        with transaction.atomic():
            if guard is not None and not guard_holds(guard):
                return None
            row = Claim(**claim)
            row.save(force_insert=True)
            ClaimItem.objects.bulk_create(
                [ClaimItem(**{**item, "claim_id": row.pk}) for item in items]
            )
            done = ClaimEvent(**{**event, "claim_id": row.pk})
            done.save(force_insert=True)
            AuditEntry(**entry).save(force_insert=True)
    except IntegrityError:
        if Claim.objects.filter(
            provider_id=claim["provider_id"], idempotency_key=claim["idempotency_key"]
        ).exists():
            return None
        raise
    return row.pk, done.pk


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


def _values(row: Row, plan: tuple[tuple[str, Field | None], ...]) -> list:
    """The row's values in the statement's column order, prepared for the database."""
    return [
        row[name] if field is None else field.get_db_prep_save(row[name], connection)
        for name, field in plan
    ]


def _plan(fields: list[Field]) -> tuple[tuple[str, Field | None], ...]:
    # None: the value goes to psycopg as it is (see _AS_IS)
    return tuple((f.attname, None if f.get_internal_type() in _AS_IS else f) for f in fields)


@cache
def _shape() -> tuple[list[Field], list[Field], list[Field], list[Field]]:
    return (
        _fields(Claim),
        _fields(ClaimItem, skip="claim"),
        _fields(ClaimEvent, skip="claim"),
        _fields(AuditEntry),
    )


@cache
def _plans() -> tuple[tuple[tuple[str, Field | None], ...], ...]:
    return tuple(_plan(fields) for fields in _shape())


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
    claim: Row, items: Sequence[Row], event: Row, entry: Row, guard: Guard | None
) -> tuple[int, int] | None:
    claim_p, item_p, event_p, audit_p = _plans()
    params = _values(claim, claim_p)
    if guard is not None:
        params += guard_params(guard)
    params += _values(event, event_p) + _values(entry, audit_p)
    rows = [_values(item, item_p) for item in items]
    params += [[row[k] for row in rows] for k in range(len(item_p))]
    # 44 parameters (49 guarded): psycopg caches the parsing of statements of at most 50
    row = fetch_one(_sql(guard is not None), params)
    return None if row is None else (row[0], row[1])
