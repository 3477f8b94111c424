"""Load the demo consortium once: logins for every role, anchored, sealed, cosigned procedures,
and a few hundred claims in every state."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from ledger.models import Leaf


class Command(BaseCommand):
    help = (
        "Create the demo logins (written to var/demo-logins.txt), anchor demo procedures, submit "
        "demo claims (honest ones and one of each fraud), verify them and make adjusters' "
        "decisions. Loads each part only once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--anchors", type=int, default=100, help="per member (default 100)")
        parser.add_argument("--claims", type=int, default=150, help="per provider (default 150)")
        parser.add_argument(
            "--live", type=int, default=8, help="claims left for the worker to verify (default 8)"
        )

    def handle(self, *args, anchors: int, claims: int, live: int, **options):
        from claims.demo import demo_logins, load_demo_claims
        from claims.models import Claim
        from review.demo import demo_backdate, demo_decide, demo_staff

        logins = settings.VAR_DIR / "demo-logins.txt"
        lines = []
        if not get_user_model().objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(9)
            get_user_model().objects.create_superuser("admin", password=password)
            lines.append(f"admin / {password}   (superuser: every role and the Django admin)")
        lines += demo_staff()
        _append(logins, lines)
        if Leaf.objects.exists():
            self.stdout.write("demo ledger already loaded")
        else:
            call_command("ledger_demo", anchors=anchors, batches=6, stdout=self.stdout)

        if Claim.objects.exists():
            self.stdout.write("demo claims already loaded")
            return
        made = load_demo_claims(claims, live=live)
        decided = demo_decide()
        demo_backdate()
        paid = _pay()
        # chain the audit trail written so far and anchor its head, as beat does every few seconds
        from ledger.services import ledger_seal_and_cosign

        ledger_seal_and_cosign()
        self.stdout.write(
            f"submitted {made['honest']} honest claims and {made['fraud']} frauds; "
            f"{live} are left for the worker to verify"
        )
        for what, n in sorted(decided.items()):
            self.stdout.write(f"  {n:4d} {what}")
        if paid:
            self.stdout.write(f"  {paid:4d} paid in a payment run")
        _append(logins, demo_logins())
        _queue_the_live_claims(self.stdout)


def _queue_the_live_claims(stdout) -> None:
    """Intake queued a verification task per demo claim, but all but the last few were verified
    here: drop those redundant messages and queue the claims left for the worker, so it verifies
    them as soon as it starts (a batch takes them all)."""
    from claims.models import Claim
    from claims.states import ClaimStatus
    from claims.tasks import claim_verify_task
    from config.celery import app

    live = list(Claim.objects.filter(status=ClaimStatus.RECEIVED).values_list("pk", flat=True))
    try:
        app.control.purge()
        for pk in live:
            claim_verify_task.delay(pk)
    except Exception as exc:  # no broker now: the claims sweeper queues them later
        stdout.write(f"could not queue the demo's live claims ({exc}); the sweeper will")


def _pay() -> int:
    """Weekly payment runs three, two and one week ago, made by the operator: the older approved
    claims are paid, the recent ones wait for the next run."""
    from payments.services import payment_chunk_settle, payment_run_collect, payment_run_start

    olga = get_user_model().objects.get(username="olga")
    today = timezone.now().date()
    paid = 0
    for weeks in (3, 2, 1):
        run = payment_run_start(today - timedelta(weeks=weeks), olga, reason="weekly run")
        paid += payment_run_collect(run.pk, dispatch=payment_chunk_settle).settled
    return paid


def _append(path, lines: list[str]) -> None:
    if not lines:
        return
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    path.chmod(0o600)
