"""Verify the audit trail's hash chain and its anchors on the ledger; non-zero on mismatch."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.verify import audit_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's hash chain from its first entry, check that every anchored "
        "chain head is the ledger leaf recorded for it (signed by a member's anchor key) and that "
        "the leaf is included in the latest operator-signed checkpoint. Reports the first bad "
        "entry; exits 1 when anything does not match. Run `ledger_audit` too: it checks the "
        "ledger itself."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--expect",
            action="append",
            default=[],
            metavar="SEQ:HEAD",
            help=(
                "a chain head noted earlier (as this command prints it: sequence number, colon, "
                "64 hex digits); the recomputed chain must still pass through it (repeatable)"
            ),
        )

    def handle(self, *args, expect=(), **options):
        report = audit_verify(expect=dict(_receipt(text) for text in expect))
        self.stdout.write(
            f"checked {report.entries} chained entries and {report.anchors} anchors against the "
            f"signed checkpoint of size {report.checkpoint_size}; {report.pending} entries "
            f"pending (not chained yet), {report.anchors_unsealed} anchors not sealed yet"
        )
        if report.ok:
            self.stdout.write(f"chain head: {report.head_seq}:{report.head.hex()}")
            self.stdout.write(
                self.style.SUCCESS(
                    f"AUDIT TRAIL OK: entries #1 to #{report.anchored_seq} are anchored and "
                    "unaltered"
                    + (
                        f"; #{report.anchored_seq + 1} to #{report.head_seq} are chained and "
                        "will be anchored at the next seal"
                        if report.unanchored
                        else ""
                    )
                )
            )
            return
        self.stderr.write(f"first bad entry: {report.first_problem}")
        for problem in report.problems[1:]:
            self.stderr.write(f"  - {problem}")
        raise CommandError(f"AUDIT TRAIL MISMATCH: {len(report.problems)} problem(s) found")


def _receipt(text: str) -> tuple[int, bytes]:
    seq, _, head = text.strip().lstrip("#").partition(":")
    try:
        value = bytes.fromhex(head)
        if not seq.isdigit() or len(value) != 32:
            raise ValueError
    except ValueError:
        raise CommandError(f"--expect {text!r}: write SEQ:HEAD, e.g. 8:<64 hex digits>") from None
    return int(seq), value
