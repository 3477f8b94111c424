"""Building blocks for ledger tests: a node with the demo consortium, and signed anchors."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command

from ledger import anchor

MEMBERS = ["acme-insurance.example", "northlab.example", "stmarys.example"]


def init_ledger() -> None:
    """Operator and member keys under the test's var/, members registered, empty checkpoint."""
    call_command("ledger_init", stdout=_Null())


def member_signer(name: str = "stmarys.example") -> str:
    return (settings.LEDGER_KEYS_DIR / "members" / f"{name}.key").read_text().strip()


def signed_anchor(n: int, member: str = "stmarys.example") -> bytes:
    """A valid anchor statement for a distinct synthetic procedure ``n``."""
    procedure = {"resourceType": "Procedure", "id": f"p{n}", "status": "completed"}
    commitment = anchor.commitment(n.to_bytes(32, "big"), procedure)
    return anchor.statement_sign(commitment=commitment, signer_key=member_signer(member))


class _Null:
    def write(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass
