"""Batches of anchors (NDJSON): one transaction, one result per line, bad lines refuse only
themselves, repeats answer the existing leaf."""

import pytest
from rest_framework.test import APIClient

from config.errors import DomainError
from ledger import merkle, services
from ledger.models import Leaf
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = pytest.mark.django_db


def _post(lines: list[bytes]):
    return APIClient().post(
        "/api/v1/anchors", data=b"\n".join(lines) + b"\n", content_type="application/x-ndjson"
    )


def test_a_batch_appends_every_statement_in_order():
    init_ledger()
    datas = [signed_anchor(n) for n in range(25)]
    results = services.anchor_append_many(datas=datas)
    assert [r.leaf.index for r in results] == list(range(25))
    assert all(r.created for r in results)
    stored = dict(Leaf.objects.values_list("index", "leaf_hash"))
    assert [bytes(stored[i]) for i in range(25)] == [merkle.leaf_hash(d) for d in datas]


def test_bad_lines_refuse_only_themselves_and_repeats_answer_the_first_leaf():
    init_ledger()
    services.anchor_append(data=signed_anchor(100))
    tampered = signed_anchor(2).replace(b'"version":1', b'"version":2')
    datas = [signed_anchor(1), tampered, signed_anchor(100), signed_anchor(1), signed_anchor(3)]
    results = services.anchor_append_many(datas=datas)
    assert isinstance(results[1], DomainError) and results[1].code == "bad_anchor"
    assert (results[0].leaf.index, results[0].created) == (1, True)
    assert (results[2].leaf.index, results[2].created) == (0, False)
    assert (results[3].leaf.index, results[3].created) == (1, False)
    assert (results[4].leaf.index, results[4].created) == (2, True)
    assert Leaf.objects.count() == 3


def test_the_api_answers_one_result_per_line():
    init_ledger()
    response = _post([signed_anchor(1), b'{"not": "a statement"}', signed_anchor(1)])
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 422, 200]
    assert [r["line"] for r in results] == [1, 2, 3]
    assert results[0]["index"] == results[2]["index"] == 0
    assert results[1]["code"] == "bad_anchor" and results[1]["detail"]


def test_the_api_refuses_an_empty_or_oversized_batch(settings):
    init_ledger()
    assert _post([]).json()["code"] == "empty_batch"
    settings.LEDGER_ANCHOR_BATCH_MAX = 3
    response = _post([signed_anchor(n) for n in range(4)])
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert not Leaf.objects.exists()


def test_results_carry_the_physical_line_and_crlf_endings_are_accepted():
    init_ledger()
    body = signed_anchor(1) + b"\r\n\r\n" + signed_anchor(2) + b"\r\n"
    response = APIClient().post("/api/v1/anchors", data=body, content_type="application/x-ndjson")
    results = response.json()["results"]
    assert [(r["line"], r["status"]) for r in results] == [(1, 201), (3, 201)]
