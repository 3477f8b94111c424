"""`manage.py ledger_audit` recomputes everything and catches a row altered behind our back."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger import merkle, services
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed_log():
    init_ledger()
    for batch in range(3):
        for n in range(batch * 7, batch * 7 + 7):
            services.anchor_append(data=signed_anchor(n))
        services.ledger_seal_and_cosign()


def _tamper(sql: str) -> None:
    """Change a row the way an attacker with database access would: around the trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql)


def _audit() -> str:
    out = StringIO()
    call_command("ledger_audit", stdout=out, stderr=out)
    return out.getvalue()


def test_audit_of_an_untouched_ledger_says_ok(sealed_log):
    output = _audit()
    assert "LEDGER OK" in output
    assert "checked 21 leaves, 18 stored subtree hashes, 4 checkpoints, 9 cosignatures" in output


@pytest.mark.parametrize(
    ("sql", "finding"),
    [
        (
            "UPDATE ledger_leaf SET leaf_hash = (SELECT hash FROM ledger_treenode WHERE level = 1 "
            'AND "index" = 0) WHERE "index" = 4',
            "leaf 4: stored leaf hash is not",
        ),
        (
            "UPDATE ledger_treenode SET hash = (SELECT hash FROM ledger_treenode WHERE level = 1 "
            'AND "index" = 0) WHERE level = 1 AND "index" = 1',
            "node (1, 1)",
        ),
        ('DELETE FROM ledger_treenode WHERE level = 2 AND "index" = 1', "node (2, 1) is missing"),
        (
            "UPDATE ledger_checkpoint SET root_hash = (SELECT root_hash FROM ledger_checkpoint "
            "WHERE size = 7) WHERE size = 14",
            "checkpoint 14",
        ),
        (
            "UPDATE ledger_cosignature SET line = (SELECT line FROM ledger_cosignature "
            "ORDER BY id LIMIT 1) WHERE id = (SELECT max(id) FROM ledger_cosignature)",
            "cosignature of",
        ),
    ],
)
def test_audit_catches_a_row_changed_through_raw_sql(sealed_log, sql, finding):
    _tamper(sql)
    with pytest.raises(CommandError, match="LEDGER MISMATCH"):
        call_command("ledger_audit", stdout=StringIO(), stderr=(err := StringIO()))
    assert finding in err.getvalue()


def test_audit_catches_a_swapped_leaf_statement(sealed_log):
    """Replacing a leaf's statement and its hash together still breaks the node above it."""
    forged = signed_anchor(999)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            'UPDATE ledger_leaf SET data = %s, leaf_hash = %s WHERE "index" = 1',
            [forged, merkle.leaf_hash(forged)],
        )
    with pytest.raises(CommandError):
        call_command("ledger_audit", stdout=StringIO(), stderr=(err := StringIO()))
    assert "node (1, 0)" in err.getvalue()


@pytest.mark.postgres
def test_audit_catches_a_log_cut_back_below_what_witnesses_cosigned(sealed_log):
    """Deleting the newest checkpoint, its nodes and leaves leaves a consistent-looking log, but
    the witnesses remember the larger tree they cosigned."""
    _tamper(
        "DELETE FROM ledger_cosignature WHERE checkpoint_id = "
        "(SELECT id FROM ledger_checkpoint WHERE size = 21)"
    )
    _tamper("DELETE FROM ledger_checkpoint WHERE size = 21")
    _tamper('DELETE FROM ledger_treenode WHERE ("index" + 1) * power(2, level) > 14')
    _tamper('DELETE FROM ledger_leaf WHERE "index" >= 14')
    with pytest.raises(CommandError):
        call_command("ledger_audit", stdout=StringIO(), stderr=(err := StringIO()))
    assert "cosigned a tree of 21 leaves; the log now ends at 14" in err.getvalue()
