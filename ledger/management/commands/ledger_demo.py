"""Anchor demo procedures from the demo members and seal them into cosigned checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from ledger import anchor, keys, services
from ledger.models import Member


def demo_procedure(member: str, n: int) -> dict:
    """A synthetic FHIR R4 Procedure: only its salted commitment ever reaches the ledger."""
    day = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=7 * n)
    return {
        "resourceType": "Procedure",
        "id": f"demo-{n}",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "subject": {"reference": f"Patient/demo-{n % 37}"},
        "performedDateTime": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "performer": [{"actor": {"display": member}}],
    }


class Command(BaseCommand):
    help = "Anchor N demo procedures per member (keys in var/keys/members/), then seal and cosign."

    def add_arguments(self, parser):
        parser.add_argument("--anchors", type=int, default=100, help="per member (default 100)")
        parser.add_argument("--batches", type=int, default=3, help="checkpoints to spread over")

    def handle(self, *args, anchors: int, batches: int, **options):
        members = [
            (m.name, keys.members_dir() / f"{m.name}.key") for m in Member.objects.order_by("name")
        ]
        members = [(name, path) for name, path in members if path.exists()]
        if not members:
            raise CommandError("no member keys here: run `manage.py ledger_init` first")
        total = anchors * len(members)
        per_batch = max(1, total // max(1, batches))
        made = 0
        for n in range(anchors):
            for name, path in members:
                signer = path.read_text(encoding="utf-8").strip()
                commitment = anchor.commitment(anchor.new_salt(), demo_procedure(name, n))
                services.anchor_append(
                    data=anchor.statement_sign(commitment=commitment, signer_key=signer)
                )
                made += 1
                if made % per_batch == 0:
                    services.ledger_seal_and_cosign()
        services.ledger_seal_and_cosign()
        latest = services.checkpoint_latest()
        self.stdout.write(
            f"anchored {made} procedures; checkpoint {latest.size} has "
            f"{latest.cosignatures.count()} cosignatures"
        )
