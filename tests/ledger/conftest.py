"""Fixtures for ledger tests: a node with the demo consortium, signed anchors, a sealed log.

The node is real: ``manage.py ledger_init`` writes the operator and member keys under the test
run's ``LEDGER_KEYS_DIR`` and registers the members; anchors are signed with the member keys it
wrote, exactly as a provider's client signs them.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from rest_framework.test import APIClient

from ledger import anchor, keys, note, services
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Checkpoint, MemberKey

STMARYS, NORTHLAB, ACME = "stmarys.example", "northlab.example", "acme-insurance.example"
_procedure_ids = itertools.count(1)


def member_signer_key(name: str = STMARYS) -> str:
    """The anchor signer key ledger_init wrote for a member (Go note format)."""
    return (settings.LEDGER_KEYS_DIR / "members" / f"{name}.key").read_text("utf-8").strip()


def procedure(n: int) -> dict:
    """A small FHIR Procedure, distinct for each ``n`` (the ledger only sees its commitment)."""
    return {
        "resourceType": "Procedure",
        "id": f"proc-{n}",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "subject": {"reference": f"Patient/p{n}"},
    }


def make_statement(
    n: int | None = None,
    *,
    member: str = STMARYS,
    signer_key: str | None = None,
    timestamp: datetime | None = None,
    salt: bytes | None = None,
) -> bytes:
    """A signed anchor statement for procedure ``n`` (a fresh one when ``n`` is None)."""
    n = next(_procedure_ids) if n is None else n
    commitment = anchor.commitment(salt or n.to_bytes(32, "big"), procedure(n))
    return anchor.statement_sign(
        commitment=commitment,
        signer_key=signer_key or member_signer_key(member),
        timestamp=timestamp,
    )


_shared_log_active = False


@pytest.fixture
def node(db) -> None:
    """This node, initialised: operator key, three members with anchor and cosigning keys, and
    the checkpoint of the empty log."""
    if _shared_log_active:
        pytest.fail(
            "this test wants an empty node, but the module's sealed_log is still in place: "
            "put tests that use `node` before the first test that uses `sealed_log`"
        )
    call_command("ledger_init", stdout=io.StringIO())


@pytest.fixture
def api() -> APIClient:
    """An API client that answers a server error as a 500 response instead of raising it, so
    that tests can assert "never a 500"."""
    return APIClient(raise_request_exception=False)


@pytest.fixture
def statement() -> Callable[..., bytes]:
    return make_statement


@pytest.fixture
def operator_verifier_key(db) -> str:
    """The log operator's verifier key (once ``node`` or ``sealed_log`` has made it)."""
    return keys.operator_verifier_key()


@pytest.fixture
def cosigner_keys(db) -> list[str]:
    """The witnesses' cosignature/v1 verifier keys, as the node registered them."""
    return list(
        MemberKey.objects.filter(purpose=MemberKey.Purpose.COSIGN).values_list(
            "verifier_key", flat=True
        )
    )


@dataclass
class SealedLog:
    """A log sealed in batches, with a few anchors still pending."""

    statements: list[bytes]
    sizes: list[int]  # checkpoint sizes, oldest first (0 = the empty log)
    pending: list[bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.sizes[-1]

    def signed_root(self, size: int) -> bytes:
        """The root hash from the operator-signed checkpoint note of ``size``."""
        cp = Checkpoint.objects.get(size=size)
        body = note.verify(cp.note, [keys.operator_verifier_key()]).text
        parsed = CheckpointBody.parse(body)
        assert (parsed.origin, parsed.size) == (settings.LEDGER_ORIGIN, size)
        return parsed.root_hash


BATCHES = (3, 4, 5)  # checkpoints of 3, 7 and 12 leaves
PENDING = 2


def build_sealed_log() -> SealedLog:
    statements: list[bytes] = []
    sizes = [0]
    for batch in BATCHES:
        for _ in range(batch):
            member = NORTHLAB if len(statements) % 3 == 2 else STMARYS
            data = make_statement(member=member)
            services.anchor_append(data=data)
            statements.append(data)
        services.ledger_seal_and_cosign()
        sizes.append(len(statements))
    pending = [make_statement() for _ in range(PENDING)]
    for data in pending:
        services.anchor_append(data=data)
    return SealedLog(statements=statements, sizes=sizes, pending=pending)


@pytest.fixture(scope="module")
def sealed_log(django_db_setup, django_db_blocker) -> Iterator[SealedLog]:
    """12 anchors from two members sealed into checkpoints of 3, 7 and 12 leaves (each cosigned
    by the three local witnesses when it was the latest), then 2 anchors not sealed yet.

    Built once per test module inside a transaction that is rolled back after the module; each
    test (marked ``django_db``) runs in a savepoint inside it, so what a test writes is undone
    and the next test sees the same log. Until the module ends, every test of the module sees
    this log: tests that need an empty node (``node``) come first in the file.
    """
    global _shared_log_active
    with django_db_blocker.unblock(), transaction.atomic():
        call_command("ledger_init", stdout=io.StringIO())
        _shared_log_active = True
        try:
            yield build_sealed_log()
        finally:
            _shared_log_active = False
            transaction.set_rollback(True)
