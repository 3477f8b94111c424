"""Load the demo consortium once: demo logins and anchored, sealed, cosigned procedures."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from ledger.models import Leaf

DEMO_USERS = [("operator", "operator: members, keys and the admin", True)]


class Command(BaseCommand):
    help = (
        "Create the demo logins (written to var/demo-logins.txt), anchor demo procedures and "
        "submit demo claims (honest ones and one of each fraud). Loads each part only once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--anchors", type=int, default=100, help="per member (default 100)")
        parser.add_argument("--claims", type=int, default=20, help="per provider (default 20)")

    def handle(self, *args, anchors: int, claims: int, **options):
        logins = settings.VAR_DIR / "demo-logins.txt"
        User = get_user_model()
        lines = []
        for username, role, superuser in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(9)
            User.objects.create_user(
                username, password=password, is_staff=True, is_superuser=superuser
            )
            lines.append(f"{username} / {password}   ({role})")
        if lines:
            with logins.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            logins.chmod(0o600)
        if Leaf.objects.exists():
            self.stdout.write("demo ledger already loaded")
        else:
            call_command("ledger_demo", anchors=anchors, batches=6, stdout=self.stdout)
        from claims.demo import demo_logins, load_demo_claims
        from claims.models import Claim

        if Claim.objects.exists():
            self.stdout.write("demo claims already loaded")
        else:
            made = load_demo_claims(claims)
            self.stdout.write(
                f"submitted {made['honest']} honest claims and {made['fraud']} frauds; "
                "the worker verifies them"
            )
            with logins.open("a", encoding="utf-8") as f:
                f.write("\n".join(demo_logins()) + "\n")
