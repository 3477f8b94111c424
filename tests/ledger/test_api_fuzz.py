"""Hostile input to the ledger API: never a 5xx; every 4xx is a JSON ``{"code", "detail"}``.

Bodies for POST /api/v1/anchors are random bytes, random JSON values and mutations of a valid
signed statement; the proof and leaf endpoints get arbitrary query strings and path segments. A
200 answer is checked too: whatever the query, a proof the node serves verifies.

The log is built once per module (``sealed_log``); every example runs in a savepoint that is
rolled back, so an anchor one example manages to append never changes what the next one sees.
"""

from __future__ import annotations

import base64
import contextlib
import json
from urllib.parse import quote

import pytest
import rfc8785
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import anchor, merkle
from tests.ledger.conftest import make_statement

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ANCHORS = "/api/v1/anchors"
INCLUSION = "/api/v1/ledger/proofs/inclusion"
CONSISTENCY = "/api/v1/ledger/proofs/consistency"


@contextlib.contextmanager
def rolled_back():
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def assert_no_server_error(response) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), response.content[:300]
        body = response.json()
        assert isinstance(body.get("code"), str) and body["code"], body
        assert isinstance(body.get("detail"), str) and body["detail"], body


def post(api, body: bytes, content_type: str = "application/json"):
    with rolled_back():
        # generic(): the test client's post() would treat an empty content type as a form.
        response = api.generic("POST", ANCHORS, data=body, content_type=content_type)
    assert_no_server_error(response)
    return response


# --- bodies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["commitment", "key_id", "member", "signature", "timestamp", "version"]
)
field_values = (
    json_values
    | st.sampled_from(["stmarys.example", "northlab.example", "2025-01-01T00:00:00Z", 1, 2, "1"])
    | st.binary(min_size=0, max_size=70).map(lambda b: base64.b64encode(b).decode())
    | st.text(alphabet="0123456789abcdefABCDEF", min_size=7, max_size=9)
)


def serialise(obj: object, canonical: bool) -> bytes:
    if canonical:
        with contextlib.suppress(Exception):
            return rfc8785.dumps(obj)
    return json.dumps(obj).encode("utf-8", "surrogatepass")


@st.composite
def mutated_statements(draw) -> bytes:
    base = draw(st.sampled_from(VALID))
    kind = draw(st.sampled_from(["replace", "delete", "add", "edit", "bytes"]))
    if kind == "bytes":
        raw = bytearray(base)
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(["flip", "insert", "delete"]))
            at = draw(st.integers(0, len(raw) - 1))
            if op == "flip":
                raw[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                raw[at:at] = draw(st.binary(min_size=1, max_size=4))
            else:
                del raw[at]
        return bytes(raw)
    obj = json.loads(base)
    name = draw(field_names)
    if kind == "replace":
        obj[name] = draw(field_values)
    elif kind == "delete":
        del obj[name]
    elif kind == "add":
        obj[draw(st.text(max_size=12))] = draw(json_values)
    else:
        value = obj[name]
        if isinstance(value, str) and value:
            at = draw(st.integers(0, len(value) - 1))
            value = value[:at] + draw(st.text(min_size=0, max_size=2)) + value[at + 1 :]
        obj[name] = value
    return serialise(obj, draw(st.booleans()))


VALID: list[bytes] = []


@pytest.fixture
def valid_statements(sealed_log) -> list[bytes]:
    """Two statements never anchored (fresh commitments) and one already in the log."""
    VALID[:] = [make_statement(), make_statement(member="northlab.example")]
    VALID.append(sealed_log.statements[0])
    return VALID


@FUZZ
@given(body=st.binary(max_size=2100))
def test_random_bytes_never_cause_a_server_error(sealed_log, api, body):
    post(api, body)


@FUZZ
@given(value=json_values, ascii_only=st.booleans())
def test_random_json_values_never_cause_a_server_error(sealed_log, api, value, ascii_only):
    post(api, json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.data())
def test_mutated_statements_never_cause_a_server_error(valid_statements, api, data):
    body = data.draw(mutated_statements())
    response = post(api, body)
    if response.status_code < 300:  # only an exact, canonical, signed statement gets in
        assert response.json()["data"].encode() == body
        anchor.statement_parse(body)


@FUZZ
@given(
    content_type=st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t)
    | st.sampled_from(["application/json", "application/json; charset=latin-1", "", "*/*"])
)
def test_any_content_type_never_causes_a_server_error(valid_statements, api, content_type):
    post(api, valid_statements[0], content_type=content_type)


# --- queries ---------------------------------------------------------------------------------

# Not "format=api": that asks DRF's browsable API for an HTML page, errors included.
param_names = st.sampled_from(
    ["index", "leaf_hash", "tree_size", "old_size", "new_size", "format"]
) | st.text(max_size=8)
param_values = (
    st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.integers(0, 16).map(str)
    | st.text(max_size=70)
    | st.binary(min_size=30, max_size=34).map(lambda b: b.hex())
    | st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode())
    | st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode())
    # U+FF13 is a full-width 3, which int() (and so DRF) reads as 3.
    | st.sampled_from(["", " 3", "3 ", "1e3", "0x10", "1.0", "-0", "NaN", "\x00", "\uff13"])
)


@st.composite
def query_strings(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=80).filter(lambda q: "#" not in q and "format=api" not in q))
    pairs = draw(st.lists(st.tuples(param_names, param_values), max_size=4))
    pairs = [(k, v) for k, v in pairs if (k, v) != ("format", "api")]
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def get(api, path: str, query: str):
    with rolled_back():
        response = api.get(f"{path}?{query}" if query else path)
    assert_no_server_error(response)
    return response


def proof_hashes(body: dict) -> list[bytes]:
    return [base64.b64decode(h) for h in body["hashes"]]


@FUZZ
@given(query=query_strings())
def test_any_inclusion_query_answers_a_proof_that_verifies_or_a_json_error(sealed_log, api, query):
    response = get(api, INCLUSION, query)
    if response.status_code == 200:
        body = response.json()
        root = base64.b64decode(body["root_hash"])
        merkle.verify_inclusion(
            body["leaf_index"],
            body["tree_size"],
            base64.b64decode(body["leaf_hash"]),
            proof_hashes(body),
            root,
        )
        if body["tree_size"] in sealed_log.sizes:
            assert root == sealed_log.signed_root(body["tree_size"])


@FUZZ
@given(query=query_strings())
def test_any_consistency_query_answers_a_proof_that_verifies_or_a_json_error(
    sealed_log, api, query
):
    response = get(api, CONSISTENCY, query)
    if response.status_code == 200:
        body = response.json()
        merkle.verify_consistency(
            body["old_size"],
            body["new_size"],
            base64.b64decode(body["old_root_hash"]),
            base64.b64decode(body["new_root_hash"]),
            proof_hashes(body),
        )


@FUZZ
@given(
    index=st.integers(0, 20).map(str)
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.text(max_size=30).map(lambda t: quote(t, safe=""))
)
def test_any_leaf_path_answers_the_leaf_or_a_json_error(sealed_log, api, index):
    response = get(api, f"/api/v1/ledger/leaves/{index}", "")
    if response.status_code == 200:
        body = response.json()
        assert merkle.leaf_hash(body["data"].encode()) == base64.b64decode(body["leaf_hash"])


@FUZZ
@given(query=query_strings())
def test_any_checkpoint_query_answers_the_note_or_a_json_error(sealed_log, api, query):
    response = get(api, "/api/v1/ledger/checkpoint", query)
    if response.status_code == 200:
        assert response.content.startswith(b"ledger.claimproof.example\n12\n")
