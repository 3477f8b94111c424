"""A cursor for the intake path's hot statements on PostgreSQL."""

from __future__ import annotations

from django.db import connection


def binding_cursor():
    """On PostgreSQL, a cursor that sends the parameters apart from the statement (psycopg's
    server-side binding) instead of quoting them into its text as Django's cursors do: a claim's
    body is not spelled out in hex in a 10 kB statement, and psycopg prepares a statement once it
    has run a few times on a connection, so PostgreSQL stops parsing and planning it on every
    request. Wrapped as Django wraps its own (database errors, query logging). Elsewhere, Django's
    cursor."""
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
