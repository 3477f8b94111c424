"""Recompute every stored hash and check every checkpoint and cosignature; non-zero on mismatch."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ledger.audit import ledger_audit


class Command(BaseCommand):
    help = (
        "Recompute every leaf hash and stored subtree hash from the leaf data, verify every "
        "anchor signature, checkpoint signature, consistency between consecutive checkpoints "
        "and every cosignature. Exits 1 when anything does not match."
    )

    def handle(self, *args, **options):
        report = ledger_audit()
        self.stdout.write(
            f"checked {report.leaves} leaves, {report.nodes} stored subtree hashes, "
            f"{report.checkpoints} checkpoints, {report.cosignatures} cosignatures"
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS("LEDGER OK: every hash and signature matches"))
            return
        for problem in report.problems:
            self.stderr.write(f"  - {problem}")
        raise CommandError(f"LEDGER MISMATCH: {len(report.problems)} problem(s) found")
