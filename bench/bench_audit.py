"""What the audit trail adds to a seal: ``ledger_seal`` with N pending audit entries against the
same seal with none, each with the same 1,000 pending ledger leaves (docs/audit-trail.md).

    .venv/bin/python bench/run.py --only audit [--quick]

Written to the interface of bench/run.py (NAME, TITLE, ``run(sizes, state)``), so it can be
registered there as ``bench/bench_audit.py``; run as a module it makes its own bench database.
"""

from __future__ import annotations

import sys
from typing import Any

NAME = "audit"
TITLE = "Audit trail: a seal with N pending audit entries vs the same seal with none"
LEAVES = 1_000  # pending ledger leaves in both seals
ROUNDS = 3


def _reset() -> None:
    from django.db import connection, transaction

    from bench import fixtures

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL ledger.allow_truncate = 'on'")
        cursor.execute("TRUNCATE audit_auditentry, audit_chainanchor")
    fixtures.reset_ledger()
    with connection.cursor() as cursor:  # the append counter restarts from the (empty) log
        cursor.execute("DELETE FROM ledger_ledgerlock WHERE name = 'append'")


def _entries(n: int) -> None:
    """N pending entries shaped like a verification verdict (the commonest entry)."""
    from audit.models import AuditEntry
    from audit.services import audit_entry

    snapshot = {"run": 1, "checks": {c: "pass" for c in ("signature", "fhir", "binding", "rules")}}
    AuditEntry.objects.bulk_create(
        [
            audit_entry(
                actor=None,
                action="claim.status",
                target=f"claim:00000000-0000-4000-8000-{i:012d}",
                why="every check passed",
                data={"from": "verifying", "to": "verified", "snapshot": snapshot},
            )
            for i in range(n)
        ],
        batch_size=5_000,
    )


def _seal(n: int) -> float:
    """Seconds of one ``ledger_seal`` with ``n`` pending entries and LEAVES pending leaves."""
    from audit.models import AuditEntry, ChainAnchor
    from bench import fixtures
    from bench.common import timed
    from ledger import services

    _reset()
    fixtures.copy_pending(fixtures.synthetic_leaves(LEAVES, fixtures.anchor_members()), start=0)
    _entries(n)
    fixtures.settle()
    seconds, checkpoint = timed(services.ledger_seal)
    chained = AuditEntry.objects.filter(seq__isnull=False).count()
    if chained != n or checkpoint.size != LEAVES + (1 if n else 0):
        raise RuntimeError(f"N={n}: {chained} chained, checkpoint of {checkpoint.size}")
    if n and ChainAnchor.objects.get().leaf_index != LEAVES:
        raise RuntimeError("the anchor is not the leaf after the pending ones")
    return seconds


def run(sizes: Any, state: dict[str, Any]) -> Any:
    from audit.verify import audit_verify
    from bench.common import Result, Row, timed

    result = Result(NAME, TITLE)
    quick = getattr(sizes, "seal_sizes", (0,))[0] < 100_000
    for n in (1_000, 10_000) if quick else (1_000, 10_000, 20_000):
        base, with_audit = [], []
        for _ in range(ROUNDS):  # interleaved, best of ROUNDS
            base.append(_seal(0))
            with_audit.append(_seal(n))
        b, w = min(base), min(with_audit)
        verify_s, report = timed(audit_verify)
        assert report.ok, report.problems
        result.details[str(n)] = {"seal_s": w, "reference_s": b, "verify_s": verify_s}
        result.rows.append(
            Row(
                figure=f"ledger_seal with N={n:,} pending audit entries (seals/s)",
                value=1 / w,
                unit="",
                reference=f"the same seal ({LEAVES:,} leaves) with no audit entry",
                reference_value=1 / b,
                aim=None,
                note=f"+{(w - b) * 1000:.0f} ms, {(w - b) / n * 1e6:.1f} µs per entry",
            )
        )
        print(
            f"  N={n:>6,}: seal {w * 1000:.0f} ms vs {b * 1000:.0f} ms without audit entries "
            f"(+{(w - b) * 1000:.0f} ms, {(w - b) / n * 1e6:.1f} µs per entry); "
            f"audit_verify of {n:,} entries {verify_s * 1000:.0f} ms",
            flush=True,
        )
    noop = _noop()
    result.details["noop_s"] = noop
    print(f"  nothing pending: the hook's check costs {noop * 1e6:.0f} µs per seal", flush=True)
    return result


def _noop() -> float:
    """Seconds the hook takes when there is nothing to chain (its one indexed query), best of 50."""
    from audit.chain import audit_chain
    from bench.common import timed
    from ledger import services

    services.ledger_seal()  # chain and anchor whatever is left
    return min(timed(audit_chain)[0] for _ in range(50))


def main() -> int:
    import tempfile
    from pathlib import Path

    from bench import common

    common.check_postgres()
    common.recreate_database()
    try:
        with tempfile.TemporaryDirectory(prefix="claimproof-bench-") as var_dir:
            common.setup_django(Path(var_dir))
            print(f"== {TITLE}")
            sizes = common.QUICK if "--quick" in sys.argv else common.FULL
            result = run(sizes, {})
            print("\n" + common.rows_table(result.rows))
    finally:
        common.drop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
