"""Tests run against the machine's real PostgreSQL and Redis.

* PostgreSQL: ``TEST_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``);
  pytest-django creates its own ``claimproof_test`` database there. When it is down, tests fall
  back to SQLite and every test marked ``postgres`` is skipped with a loud reason.
* Redis: ``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) for tests marked ``redis``.
* Chromium: ``/usr/bin/chromium`` (Debian's package) for tests marked ``browser``.

With ``REQUIRE_SERVICES=1`` (what CI sets) a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import environ
import pytest

REQUIRE = os.environ.get("REQUIRE_SERVICES") == "1"
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# `make test` runs a second pass with TEST_DB=sqlite: the database `make run` uses by default.
FORCE_SQLITE = os.environ.get("TEST_DB") == "sqlite"

SERVICES: dict[str, str | None] = {}  # name -> None when usable, else why not


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{parts.port or default_port} unreachable ({exc})"


def _postgres_problem() -> str | None:
    if problem := _reachable(PG_URL, 5432):
        return problem
    import psycopg

    parts = urlparse(PG_URL)
    try:
        psycopg.connect(PG_URL.replace(parts.scheme, "postgresql", 1), connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"cannot connect to {PG_URL}: {exc}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings
    from django.db import connections
    from django.db.backends.signals import connection_created

    # Tests never touch the developer's var/: keys, broker folders and SQLite go to a temp dir.
    var = Path(tempfile.mkdtemp(prefix="claimproof-test-"))
    settings.VAR_DIR = var
    settings.LEDGER_KEYS_DIR = var / "keys"
    settings.LEDGER_OPERATOR_KEY_FILE = var / "keys" / "operator.key"

    SERVICES["postgres"] = "not used: TEST_DB=sqlite" if FORCE_SQLITE else _postgres_problem()
    SERVICES["redis"] = _reachable(REDIS_URL, 6379)
    SERVICES["chromium"] = None if shutil.which(CHROMIUM) else f"{CHROMIUM} is not installed"
    missing = {
        name: why
        for name, why in SERVICES.items()
        if why and not (FORCE_SQLITE and name == "postgres")
    }
    if REQUIRE and missing:
        raise pytest.UsageError(
            "REQUIRE_SERVICES=1 but these are missing: "
            + "; ".join(f"{name}: {why}" for name, why in missing.items())
        )
    for conn in connections.all(initialized_only=True):
        assert conn.connection is None, "a database connection was opened too early"
        del connections[conn.alias]
    if SERVICES["postgres"] is None:
        settings.DATABASES["default"] = {
            **environ.Env.db_url_config(PG_URL),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": "claimproof_test"},
        }
    else:
        settings.DATABASES["default"] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(var / "db.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
            "TEST": {"NAME": str(var / "test.sqlite3")},
        }
    # Django read DATABASES while setting up; no connection exists yet, so it may read it again.
    connections.__dict__.pop("settings", None)
    connections._settings = None
    connection_created.connect(_allow_truncate, dispatch_uid="allow-test-truncate")
    # The suite swaps databases under one process: trust no cached checkpoint across tests (the
    # tests of that fast lane turn it on themselves).
    settings.LEDGER_CHECKPOINT_TTL_S = 0
    settings.CELERY_BROKER_URL = REDIS_URL
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}


def _allow_truncate(sender, connection, **kwargs) -> None:
    """Let Django empty the throwaway test database between transactional tests: on PostgreSQL
    the ledger tables refuse TRUNCATE unless the session allows it (migration 0002)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET ledger.allow_truncate = 'on'")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for name, why in SERVICES.items():
        if why:
            lines.append(f"!!! {name.upper()} MISSING: {why}; tests that need it are SKIPPED !!!")
        else:
            lines.append(f"{name}: available")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Repeat the warning at the end, where nobody misses it (even with -q)."""
    for name, why in SERVICES.items():
        if why:
            terminalreporter.write_sep(
                "!", f"{name.upper()} MISSING: {why}; its tests were SKIPPED", red=True
            )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, service in (
            ("postgres", "postgres"),
            ("redis", "redis"),
            ("browser", "chromium"),
        ):
            why = SERVICES.get(service)
            if item.get_closest_marker(marker) and why:
                item.add_marker(pytest.mark.skip(reason=f"{service} missing: {why}"))


@pytest.fixture
def celery_worker(settings):
    """A real Celery worker thread consuming from the machine's Redis (a queue of its own)."""
    import uuid

    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    queue = f"test-{uuid.uuid4().hex[:8]}"
    app.conf.update(
        broker_url=REDIS_URL,
        broker_transport_options={"visibility_timeout": 60},
        task_default_queue=queue,
        task_always_eager=False,
    )
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue]) as worker:
        yield worker
