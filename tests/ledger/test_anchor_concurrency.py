"""Concurrent appends on PostgreSQL: contiguous indexes, and one leaf per commitment."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from ledger import merkle, services
from ledger.models import Leaf
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _append(data: bytes):
    try:
        result = services.anchor_append(data=data)
        return result.leaf.index, result.created
    finally:
        connection.close()


def test_fifty_racing_posts_of_one_anchor_make_exactly_one_leaf():
    init_ledger()
    data = signed_anchor(1)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(_append, [data] * 50))
    assert Leaf.objects.count() == 1
    assert {index for index, _ in results} == {0}
    assert sum(created for _, created in results) == 1


def test_concurrent_distinct_anchors_get_contiguous_indexes_and_seal_cleanly():
    init_ledger()
    datas = [signed_anchor(n) for n in range(60)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(_append, datas))
    assert sorted(index for index, _ in results) == list(range(60))
    cp = services.ledger_seal()
    by_index = dict(Leaf.objects.values_list("index", "data"))
    expected = merkle.root_hash([merkle.leaf_hash(bytes(by_index[i])) for i in range(60)])
    assert (cp.size, bytes(cp.root_hash)) == (60, expected)


def _append_many(datas: list[bytes]):
    try:
        return [r.leaf.index for r in services.anchor_append_many(datas=datas)]
    finally:
        connection.close()


def test_overlapping_batches_racing_each_other_give_one_leaf_per_commitment():
    init_ledger()
    datas = [signed_anchor(n) for n in range(40)]
    batches = [datas[i : i + 20] for i in range(0, 30, 5)]  # every batch overlaps another
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(_append_many, batches))
    assert Leaf.objects.count() == 40
    by_commitment = {}
    for batch, indexes in zip(batches, answers, strict=True):
        for data, index in zip(batch, indexes, strict=True):
            assert by_commitment.setdefault(data, index) == index
    assert sorted(set(by_commitment.values())) == list(range(40))
