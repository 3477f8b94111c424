"""Create this node's log operator key and the demo consortium's member keys (under var/keys/)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ledger import keys, note, services
from ledger.models import Member, MemberKey

DEMO_MEMBERS = [
    ("stmarys.example", "St Mary's Hospital"),
    ("northlab.example", "North Laboratory"),
    ("acme-insurance.example", "Acme Insurance"),
]


def _key_file(path, name: str, generate) -> str:
    """The signer key in ``path``, generated once; never overwritten."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    signer, _ = generate(name)
    keys.write_secret(path, signer)
    return signer


class Command(BaseCommand):
    help = (
        "Create the log operator key and each member's anchor and cosigning keys (Go note "
        "format, files under LEDGER_KEYS_DIR), register the members, and seal the first "
        "checkpoint. Safe to run again: existing keys are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--member",
            action="append",
            metavar="NAME",
            help="A member to create (repeatable). Default: the three demo members.",
        )

    def handle(self, *args, member=None, **options):
        from django.conf import settings

        operator_path = settings.LEDGER_OPERATOR_KEY_FILE
        if not settings.LEDGER_OPERATOR_KEY:
            _key_file(operator_path, settings.LEDGER_ORIGIN, note.generate_key)
        operator = keys.operator_signer_key()
        if note.verifier_key(operator).split("+", 1)[0] != settings.LEDGER_ORIGIN:
            raise CommandError(
                f"the operator key is named for another log than LEDGER_ORIGIN "
                f"{settings.LEDGER_ORIGIN!r}"
            )
        members = [(m, m) for m in member] if member else DEMO_MEMBERS
        with transaction.atomic():
            for name, display in members:
                self._member(name, display)
        services.ledger_seal()
        self.stdout.write(f"log origin:    {settings.LEDGER_ORIGIN}")
        self.stdout.write(f"operator key:  {note.verifier_key(operator)}")
        self.stdout.write(
            f"members:       {Member.objects.count()}, quorum {settings.LEDGER_QUORUM}"
        )

    def _member(self, name: str, display: str) -> None:
        try:
            anchor_signer = _key_file(keys.members_dir() / f"{name}.key", name, note.generate_key)
            cosigner = _key_file(
                keys.witnesses_dir() / f"{name}.key", name, note.generate_cosigner_key
            )
        except note.NoteError as exc:
            raise CommandError(f"bad member name {name!r}: {exc}") from exc
        member, _ = Member.objects.get_or_create(name=name, defaults={"display_name": display})
        for purpose, signer in (
            (MemberKey.Purpose.ANCHOR, anchor_signer),
            (MemberKey.Purpose.COSIGN, cosigner),
        ):
            vkey = note.verifier_key(signer)
            if not MemberKey.objects.filter(verifier_key=vkey).exists():
                MemberKey.objects.create(
                    member=member, purpose=purpose, verifier_key=vkey, key_id=vkey.split("+")[1]
                )
        self.stdout.write(f"member {name}: anchor and cosigning keys ready")
