"""What every benchmark shares: the bench database, Django set-up, timing, and the result table.

Nothing here imports Django at module level: :func:`setup_django` must run first, once the
environment points at the bench database and a temporary var directory.
"""

from __future__ import annotations

import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# CLAIMPROOF_BENCH_DB lets two people run benchmarks on one machine without dropping each other's.
BENCH_DB = os.environ.get("CLAIMPROOF_BENCH_DB", "claimproof_bench")
ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres connect_timeout=5"
BENCH_URL = f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{BENCH_DB}"


class PostgresDown(RuntimeError):
    """The machine's PostgreSQL does not answer."""


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs: full (the issue's sizes) or quick (a smoke test)."""

    seal_sizes: tuple[int, ...]
    proof_size: int
    row_sizes: tuple[int, ...]
    proofs_per_round: int
    row_samples: int
    verify_samples: int
    anchors: int
    anchors_profiled: int
    ed25519_verifies: int
    claims_per_round: int = 400  # two batches of CLAIMS_VERIFY_BATCH (200)
    claims_profiled: int = 200
    rounds: int = 3


FULL = Sizes(
    seal_sizes=(100_000, 1_000_000),
    proof_size=1_000_000,
    row_sizes=(10_000, 100_000, 1_000_000),
    proofs_per_round=2_000,
    row_samples=500,
    verify_samples=300,
    anchors=3_000,
    anchors_profiled=1_000,
    ed25519_verifies=20_000,
)
QUICK = Sizes(
    seal_sizes=(10_000, 50_000),
    proof_size=50_000,
    row_sizes=(1_000, 10_000, 50_000),
    proofs_per_round=300,
    row_samples=200,
    verify_samples=100,
    anchors=300,
    anchors_profiled=200,
    ed25519_verifies=3_000,
    claims_per_round=60,
    claims_profiled=60,
    rounds=2,
)


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure beside the reference it is measured against, as a ratio (higher is better)."""

    figure: str
    value: float
    unit: str
    reference: str
    reference_value: float
    aim: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.reference_value if self.reference_value else float("nan")

    @property
    def met(self) -> bool | None:
        return None if self.aim is None else self.ratio >= self.aim

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class Result:
    """A benchmark's rows, its other findings, and free-form lines to show under the table."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "rows": [r.as_dict() for r in self.rows],
            "details": self.details,
            "seconds": round(self.seconds, 2),
        }


def fmt(value: float, unit: str = "") -> str:
    """A number the way a person reads it: 3 significant digits, thousands separated."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def ratio_text(ratio: float) -> str:
    """2 decimals, or 2 significant digits below 0.1 (0.0029x, not 0.00x)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 or ratio != ratio else f"{ratio:.2g}x"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned and the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        out = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def rows_table(rows: list[Row]) -> str:
    headers = ["figure", "measured", "reference", "ref. measured", "ratio", "aim", "met?"]
    body = [
        [
            r.figure,
            fmt(r.value, r.unit),
            r.reference,
            fmt(r.reference_value, r.unit),
            ratio_text(r.ratio),
            "-" if r.aim is None else f">= {r.aim:g}x",
            met_text(r.met),
        ]
        for r in rows
    ]
    return table(headers, body)


# --- timing -----------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], *, gc_paused: bool = True) -> tuple[float, Any]:
    """Seconds ``fn()`` takes, and what it returned. The garbage collector is paused unless
    ``gc_paused`` is false (code measured as a long-running process runs it, collector on)."""
    gc.collect()
    if gc_paused:
        gc.disable()
    try:
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out
    finally:
        gc.enable()


def best_rates(
    contenders: dict[str, Callable[[], int]], rounds: int, *, gc_paused: bool = True
) -> dict[str, list[float]]:
    """Run each contender ``rounds`` times, interleaved so that noise hits all of them alike.

    Each contender does a batch of operations and returns how many; the answer is the rate
    (operations per second) of every round, per contender.
    """
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            seconds, count = timed(fn, gc_paused=gc_paused)
            rates[name].append(count / seconds)
    return rates


def best(rates: list[float]) -> float:
    return max(rates)


def spread(rates: list[float]) -> str:
    return f"min {fmt(min(rates))}, median {fmt(statistics.median(rates))}, max {fmt(max(rates))}"


# --- the bench database -----------------------------------------------------------------------


def _admin_execute(*statements: str) -> None:
    import psycopg

    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)
    except psycopg.OperationalError as exc:
        raise PostgresDown(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) does not answer: {exc}".strip()
        ) from exc


def check_postgres() -> str:
    """The server's version; raises :class:`PostgresDown` when it does not answer."""
    import psycopg

    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.OperationalError as exc:
        raise PostgresDown(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) does not answer: {exc}".strip()
        ) from exc


def recreate_database() -> None:
    _admin_execute(
        f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)", f"CREATE DATABASE {BENCH_DB}"
    )


def drop_database() -> None:
    """Drop the bench database (Django's connections to it are closed first)."""
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    _admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def setup_django(var_dir: Path) -> None:
    """Point Django at the bench database and ``var_dir``, migrate, and run ``ledger_init``."""
    os.environ["DATABASE_URL"] = BENCH_URL
    os.environ["CLAIMPROOF_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DEBUG"] = "False"  # DEBUG keeps every query in memory: not what production does
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in ("LEDGER_KEYS_DIR", "LEDGER_OPERATOR_KEY", "LEDGER_OPERATOR_KEY_FILE"):
        os.environ.pop(name, None)  # keys go to the temporary var directory
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("ledger_init", stdout=io.StringIO())


def server_settings() -> dict[str, str]:
    """The PostgreSQL settings that move these figures the most."""
    from django.db import connection

    names = ["server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level"]
    with connection.cursor() as cursor:
        out = {}
        for name in names:
            cursor.execute(f"SHOW {name}")
            out[name] = cursor.fetchone()[0]
    return out


# --- what the machine's PostgreSQL can do at best -----------------------------------------------


def round_trips(count: int) -> Callable[[], int]:
    """``count`` ``SELECT 1`` round trips on Django's connection, bypassing the ORM."""
    from django.db import connection

    def run() -> int:
        with connection.cursor() as cursor:
            raw = cursor.cursor
            for _ in range(count):
                raw.execute("SELECT 1")
                raw.fetchone()
        return count

    return run


def durable_commits(count: int) -> Callable[[], int]:
    """``count`` one-row INSERT + COMMIT transactions (each flushes the WAL), bypassing the ORM."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial, payload bytea)")
    payload = b"x" * 300

    def run() -> int:
        with connection.cursor() as cursor:
            raw = cursor.cursor
            for _ in range(count):
                # Django runs in autocommit mode: each INSERT is its own committed transaction.
                raw.execute("INSERT INTO bench_commit (payload) VALUES (%s)", (payload,))
        return count

    return run
