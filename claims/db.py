"""The intake path's hot statement on PostgreSQL: parameters bound apart, and its own health
check."""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError, connection


def binding_cursor():
    """On PostgreSQL, a cursor that sends the parameters apart from the statement (psycopg's
    server-side binding) instead of quoting them into its text as Django's cursors do: a claim's
    body is not spelled out in hex in a 10 kB statement. Wrapped as Django wraps its own
    (database errors, query logging). Elsewhere, Django's cursor."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    import psycopg

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = psycopg.Cursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def fetch_one(sql: str, params: list[Any]) -> tuple | None:
    """Run one statement through :func:`binding_cursor`; its first row.

    On PostgreSQL, outside a transaction, the statement is its own health check: Django's
    ``CONN_HEALTH_CHECKS`` would spend a ``SELECT 1`` round trip on it per request; a connection
    found dead is closed and the statement run once more on a new one. (A statement that
    committed before its connection died meets its own row the second time: for intake's
    ``INSERT … ON CONFLICT DO NOTHING`` that is the taken-key answer, and the earlier claim is
    answered.) Not prepared: Django turns psycopg's preparing off (connection poolers), and
    preparing it measured no less PostgreSQL CPU per claim (docs/benchmarks.md)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    reuse = connection.connection is not None and not connection.in_atomic_block
    if reuse:
        connection.health_check_done = True
    for attempt in range(2):
        try:
            with binding_cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()
        except (OperationalError, InterfaceError):
            if attempt or not reuse or connection.in_atomic_block:
                raise
            connection.close()
    raise AssertionError("unreachable")
