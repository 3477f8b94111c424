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
        "Create the demo logins (passwords written to var/demo-logins.txt) and anchor demo "
        "procedures. Does nothing to a ledger that already has leaves."
    )

    def add_arguments(self, parser):
        parser.add_argument("--anchors", type=int, default=100, help="per member (default 100)")

    def handle(self, *args, anchors: int, **options):
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
            return
        call_command("ledger_demo", anchors=anchors, batches=6, stdout=self.stdout)
