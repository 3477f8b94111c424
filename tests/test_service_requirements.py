"""A missing PostgreSQL skips loudly; with REQUIRE_SERVICES=1 it fails the run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEAD_PG = "postgres://postgres@127.0.0.1:9/test"  # the discard port: nothing listens there


def _pytest(*, require: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEST_DATABASE_URL": DEAD_PG, "REQUIRE_SERVICES": "1" if require else "0"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/ledger/test_append_only.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_postgres_its_tests_are_skipped_with_a_loud_reason():
    run = _pytest(require=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "POSTGRES MISSING" in run.stdout
    assert "skipped" in run.stdout


def test_with_require_services_a_missing_postgres_fails_the_run():
    run = _pytest(require=True)
    assert run.returncode != 0
    assert "REQUIRE_SERVICES=1 but these are missing: postgres" in run.stdout + run.stderr
