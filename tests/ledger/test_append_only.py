"""History cannot be rewritten: not through the models, not through raw SQL on PostgreSQL."""

import pytest
from django.db import DatabaseError, connection, transaction

from ledger import services
from ledger.models import AppendOnlyError, Checkpoint, Cosignature, Leaf, TreeNode
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed_log():
    init_ledger()
    for n in range(5):
        services.anchor_append(data=signed_anchor(n))
    services.ledger_seal_and_cosign()


def test_models_refuse_to_update_or_delete_a_leaf(sealed_log):
    leaf = Leaf.objects.get(index=0)
    leaf.data = b"{}"
    with pytest.raises(AppendOnlyError):
        leaf.save()
    with pytest.raises(AppendOnlyError):
        leaf.delete()
    with pytest.raises(AppendOnlyError):
        Leaf.objects.filter(index=0).update(data=b"{}")
    with pytest.raises(AppendOnlyError):
        Leaf.objects.all().delete()


def test_models_refuse_to_change_stored_hashes_checkpoints_and_cosignatures(sealed_log):
    for model in (TreeNode, Checkpoint, Cosignature):
        assert model.objects.exists()
        with pytest.raises(AppendOnlyError):
            model.objects.update()
        with pytest.raises(AppendOnlyError):
            model.objects.all().delete()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_leaf SET data = '\\x00'::bytea WHERE index = 1",
        "DELETE FROM ledger_leaf WHERE index = 4",
        "UPDATE ledger_treenode SET hash = '\\x00'::bytea WHERE level = 1",
        "DELETE FROM ledger_treenode",
        "UPDATE ledger_checkpoint SET size = size + 1",
        "DELETE FROM ledger_cosignature",
    ],
)
def test_postgres_trigger_refuses_raw_sql_rewrites(sealed_log, sql):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert Leaf.objects.count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_trigger_refuses_truncate_unless_the_session_allows_it(sealed_log):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL ledger.allow_truncate = 'off'")
        cursor.execute("TRUNCATE ledger_leaf CASCADE")
    assert Leaf.objects.count() == 5
