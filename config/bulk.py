"""Writing many rows in few statements, without a model instance per row.

Verification writes several rows per claim (checks, events, audit entries, billed anchors) for
batches of claims. ``bulk_create`` builds a model instance per row and an ``INSERT`` with a
placeholder per value, which psycopg's client-side binding then splits and quotes in Python: for a
batch, most of the time of the write. Here:

* :func:`insert_rows`: ``COPY ... FROM STDIN`` on PostgreSQL (psycopg adapts each value in C);
  ``bulk_create`` for a row or two, and on SQLite (the embedded default).
* Upserts and ``UPDATE ... FROM`` take a column of values as one array parameter and
  ``unnest(...)`` it: the statement's text stays the same whatever the batch size.

Statements run through Django's connection (its transaction, its error classes) and are logged
as Django logs queries, so query counts in tests still see them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, models

# COPY takes two round trips (the statement, then the data): one plain INSERT is cheaper for a
# row or two.
_COPY_FROM = 3


def insert_rows(
    model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert ``rows`` (tuples of values in the order of ``fields``, attribute names such as
    ``claim_id``; JSON fields as Python values) into ``model``'s table; return how many."""
    rows = list(rows)
    if not rows:
        return 0
    opts = model._meta
    if connection.vendor != "postgresql" or len(rows) < _COPY_FROM:
        model.objects.bulk_create([model(**dict(zip(fields, row, strict=True))) for row in rows])
        return len(rows)
    quote = connection.ops.quote_name
    targets = [opts.get_field(_field_name(opts, f)) for f in fields]
    columns = ", ".join(quote(f.column) for f in targets)
    # JSON as JSONField writes it without an encoder (json.dumps); COPY takes it as text.
    as_json = [i for i, f in enumerate(targets) if isinstance(f, models.JSONField)]
    sql = f"COPY {quote(opts.db_table)} ({columns}) FROM STDIN"
    began = time.perf_counter()
    # wrap_database_errors: psycopg's errors become Django's (IntegrityError, OperationalError)
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(sql) as copy,
    ):
        for row in rows:
            if as_json:
                row = list(row)
                for i in as_json:
                    row[i] = json.dumps(row[i])
            copy.write_row(row)
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": f"{sql} -- {len(rows)} rows", "time": f"{time.perf_counter() - began:.3f}"}
        )
    return len(rows)


def _field_name(opts, attname: str) -> str:
    """``claim_id`` -> ``claim``: COPY names columns, callers name attributes."""
    for f in opts.concrete_fields:
        if f.attname == attname:
            return f.name
    return attname
