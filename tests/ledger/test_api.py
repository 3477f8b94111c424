"""The ledger's REST API (/api/v1/): anchoring, the checkpoint note, proofs and leaves.

Everything a client receives is checked the way a client would check it: checkpoints with
ledger.note under the operator's and the witnesses' keys, proofs with ledger.merkle against the
root of the signed checkpoint of that size.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from django.utils import timezone

from ledger import anchor, merkle, note
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.models import Leaf, MemberKey
from tests.ledger.conftest import BATCHES, NORTHLAB, STMARYS, make_statement, member_signer_key

pytestmark = pytest.mark.django_db

# Tests on an empty node (fixture ``node``) come first: the module-scoped ``sealed_log`` stays in
# place from the first test that uses it to the end of the module.

ANCHORS = "/api/v1/anchors"
CHECKPOINT = "/api/v1/ledger/checkpoint"
INCLUSION = "/api/v1/ledger/proofs/inclusion"
CONSISTENCY = "/api/v1/ledger/proofs/consistency"


def post(api, data: bytes, content_type: str = "application/json"):
    return api.post(ANCHORS, data=data, content_type=content_type)


def b64decode(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"]
    assert isinstance(body.get("detail"), str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def flip_signature(data: bytes) -> bytes:
    obj = json.loads(data)
    sig = bytearray(b64decode(obj["signature"]))
    sig[7] ^= 0x20
    obj["signature"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_member_keys_on_disk_are_the_registered_anchor_keys(node):
    """The fixtures sign with the keys ledger_init wrote; the node knows their verifier keys."""
    for name in (STMARYS, NORTHLAB):
        registered = MemberKey.objects.get(member__name=name, purpose="anchor").verifier_key
        assert note.verifier_key(member_signer_key(name)) == registered


# --- POST /api/v1/anchors --------------------------------------------------------------------


def test_it_appends_an_anchor_and_answers_201_with_its_index_and_leaf_hash(node, api):
    data = make_statement()
    response = post(api, data)
    assert response.status_code == 201
    body = response.json()
    assert body["index"] == 0
    assert b64decode(body["leaf_hash"]) == hashlib.sha256(b"\x00" + data).digest()
    assert body["member"] == STMARYS
    assert body["data"].encode() == data
    assert body["sealed"] is False


def test_it_gives_consecutive_indexes_to_consecutive_anchors(node, api):
    indexes = [post(api, make_statement()).json()["index"] for _ in range(3)]
    assert indexes == [0, 1, 2]


def test_it_stores_the_exact_bytes_and_commitment(node, api):
    data = make_statement()
    index = post(api, data).json()["index"]
    leaf = Leaf.objects.get(index=index)
    assert bytes(leaf.data) == data
    assert bytes(leaf.commitment) == anchor.statement_parse(data).commitment


def test_the_same_statement_again_answers_200_with_the_same_leaf(node, api):
    data = make_statement()
    first = post(api, data).json()
    again = post(api, data)
    assert again.status_code == 200
    assert again.json()["index"] == first["index"]
    assert again.json()["leaf_hash"] == first["leaf_hash"]
    assert Leaf.objects.count() == 1


def test_the_same_commitment_in_another_statement_is_a_409_conflict(node, api):
    post(api, make_statement(7, timestamp=datetime(2025, 1, 1, tzinfo=UTC)))
    response = post(api, make_statement(7, timestamp=datetime(2025, 1, 2, tzinfo=UTC)))
    body = assert_error(response, 409, "commitment_exists")
    assert body["leaf_index"] == 0
    assert Leaf.objects.count() == 1


def test_the_same_commitment_from_another_member_is_a_409_conflict(node, api):
    post(api, make_statement(7, member=STMARYS))
    assert_error(post(api, make_statement(7, member=NORTHLAB)), 409, "commitment_exists")


def test_an_unknown_member_is_refused_with_422(node, api):
    stranger, _ = note.generate_key("stranger.example")
    assert_error(post(api, make_statement(signer_key=stranger)), 422, "unknown_member")


def test_an_unknown_key_of_a_known_member_is_refused_with_422(node, api):
    other_key_same_name, _ = note.generate_key(STMARYS)
    response = post(api, make_statement(signer_key=other_key_same_name))
    assert_error(response, 422, "unknown_key")


def test_a_revoked_key_is_refused_with_422(node, api):
    MemberKey.objects.filter(member__name=STMARYS, purpose="anchor").update(
        revoked_at=timezone.now() - timedelta(days=1), revocation_reason="laptop stolen"
    )
    assert_error(post(api, make_statement()), 422, "revoked_key")
    assert not Leaf.objects.exists()


def test_a_bad_signature_is_refused_with_422(node, api):
    assert_error(post(api, flip_signature(make_statement())), 422, "bad_signature")
    assert not Leaf.objects.exists()


def test_a_statement_whose_commitment_was_swapped_is_refused_with_422(node, api):
    obj = json.loads(make_statement(1))
    obj["commitment"] = json.loads(make_statement(2))["commitment"]
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert_error(post(api, data), 422, "bad_signature")


def test_non_canonical_json_is_refused_with_422(node, api):
    pretty = json.dumps(json.loads(make_statement()), indent=2).encode()
    assert_error(post(api, pretty), 422, "bad_anchor")


def test_a_statement_with_an_extra_field_is_refused_with_422(node, api):
    obj = json.loads(make_statement())
    obj["patient"] = "Patient/example"
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert_error(post(api, data), 422, "bad_anchor")


def test_a_statement_dated_in_the_future_is_refused_with_422(node, api):
    later = timezone.now() + timedelta(hours=1)
    assert_error(post(api, make_statement(timestamp=later)), 422, "bad_timestamp")


def test_a_statement_dated_within_the_allowed_skew_is_accepted(node, api, settings):
    soon = timezone.now() + settings.LEDGER_ANCHOR_MAX_SKEW / 2
    assert post(api, make_statement(timestamp=soon)).status_code == 201


def test_an_old_statement_is_accepted(node, api):
    assert post(api, make_statement(timestamp=datetime(2001, 1, 1, tzinfo=UTC))).status_code == 201


def test_an_oversize_body_is_refused_with_413(node, api, settings):
    body = b" " * (settings.LEDGER_ANCHOR_MAX_BYTES + 1)
    assert_error(post(api, body), 413, "anchor_too_large")


def test_a_valid_statement_over_the_configured_limit_is_refused_with_413(node, api, settings):
    settings.LEDGER_ANCHOR_MAX_BYTES = 64
    assert_error(post(api, make_statement()), 413, "anchor_too_large")
    assert not Leaf.objects.exists()


def test_a_body_larger_than_its_declared_length_is_still_limited(node, api, settings):
    settings.LEDGER_ANCHOR_MAX_BYTES = 64
    data = make_statement()
    response = api.post(ANCHORS, data=data, content_type="application/json", CONTENT_LENGTH="10")
    assert_error(response, 422)
    assert not Leaf.objects.exists()


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_a_wrong_content_type_is_refused_with_a_json_error(node, api, content_type):
    response = post(api, make_statement(), content_type=content_type)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, "unsupported_media_type")
    assert not Leaf.objects.exists()


def test_a_json_content_type_with_a_charset_is_accepted(node, api):
    response = post(api, make_statement(), content_type="application/json; charset=utf-8")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"\xff\xfe", b"[]", b"null", b"{}", b'{"version":1}'],
    ids=["empty", "truncated", "text", "bad-utf8", "array", "null", "empty-object", "partial"],
)
def test_invalid_json_is_refused_with_a_422_json_error(node, api, body):
    assert_error(post(api, body), 422, "bad_anchor")


def test_a_member_name_with_a_nul_character_is_refused_not_a_server_error(node, api):
    """Bug: anchor.statement_parse accepts a member with U+0000; PostgreSQL then refuses the
    lookup and the request ends in a 500 (see the report: ledger/anchor.py member check)."""
    data = _statement_with_member(make_statement(), "stmarys\u0000.example")
    assert_error(post(api, data), 422, "bad_anchor")


def test_a_member_name_with_a_lone_surrogate_is_refused_not_a_server_error(node, api):
    """Bug: json.loads turns "\\ud800" into a lone surrogate, which rfc8785 cannot encode; the
    CanonicalizationError escapes statement_parse as a 500."""
    obj = json.loads(make_statement())
    obj["member"] = "\ud800"
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert_error(post(api, data), 422, "bad_anchor")


def _statement_with_member(data: bytes, member: str) -> bytes:
    obj = json.loads(data)
    obj["member"] = member
    return rfc8785.dumps(obj)


def test_a_refused_anchor_changes_nothing(node, api):
    for data in (flip_signature(make_statement()), b"{}", make_statement(timestamp=None)[:-1]):
        post(api, data)
    assert not Leaf.objects.exists()


def test_the_checkpoint_of_an_empty_log_is_signed_too(node, api, operator_verifier_key):
    opened = note.verify(api.get(CHECKPOINT).content, [operator_verifier_key])
    assert CheckpointBody.parse(opened.text).root_hash == merkle.EMPTY_ROOT


def test_without_a_checkpoint_it_answers_404_json(db, api):
    assert_error(api.get(CHECKPOINT), 404, "no_checkpoint")


# --- GET /api/v1/ledger/checkpoint -----------------------------------------------------------


def test_the_checkpoint_is_served_as_plain_text(sealed_log, api):
    response = api.get(CHECKPOINT)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_the_checkpoint_verifies_under_the_operator_key(sealed_log, api, operator_verifier_key):
    opened = note.verify(api.get(CHECKPOINT).content, [operator_verifier_key])
    assert opened.names == (operator_verifier_key.split("+", 1)[0],)


def test_the_checkpoint_parses_as_the_latest_sealed_tree(sealed_log, api, operator_verifier_key):
    opened = note.verify(api.get(CHECKPOINT).content, [operator_verifier_key])
    checkpoint = CheckpointBody.parse(opened.text)
    assert checkpoint.size == sealed_log.size
    assert checkpoint.root_hash == merkle.root_hash(
        [merkle.leaf_hash(s) for s in sealed_log.statements]
    )


def test_the_checkpoint_carries_every_witness_cosignature(sealed_log, api, cosigner_keys):
    cosigned = note.verify_cosignature(api.get(CHECKPOINT).content, cosigner_keys)
    assert sorted(cosigned) == sorted(k.split("+", 1)[0] for k in cosigner_keys)
    assert len(cosigned) >= 2  # LEDGER_QUORUM


def test_the_checkpoint_is_exactly_the_c2sp_note(sealed_log, api, operator_verifier_key):
    text = api.get(CHECKPOINT).content.decode("utf-8")
    body, lines = note.split_note(text)
    assert text == body + "\n" + "".join(lines)
    assert all(line.startswith("\u2014 ") for line in lines)
    assert len(lines) == 4  # the operator and three witnesses


# --- inclusion proofs ------------------------------------------------------------------------


def _inclusion(api, **params) -> dict:
    response = api.get(INCLUSION, params)
    assert response.status_code == 200, response.content
    return response.json()


def _verify_inclusion(body: dict, log, data: bytes) -> None:
    size, index = body["tree_size"], body["leaf_index"]
    leaf = merkle.leaf_hash(data)
    assert b64decode(body["leaf_hash"]) == leaf
    proof = [b64decode(h) for h in body["hashes"]]
    root = b64decode(body["root_hash"])
    merkle.verify_inclusion(index, size, leaf, proof, root)
    merkle.verify_inclusion(index, size, leaf, proof, log.signed_root(size))


def test_an_inclusion_proof_by_index_verifies_against_the_latest_checkpoint(sealed_log, api):
    for index, data in enumerate(sealed_log.statements):
        body = _inclusion(api, index=index)
        assert (body["leaf_index"], body["tree_size"]) == (index, sealed_log.size)
        _verify_inclusion(body, sealed_log, data)


def test_an_inclusion_proof_by_hex_leaf_hash_verifies(sealed_log, api):
    data = sealed_log.statements[5]
    body = _inclusion(api, leaf_hash=merkle.leaf_hash(data).hex())
    assert body["leaf_index"] == 5
    _verify_inclusion(body, sealed_log, data)


def test_an_inclusion_proof_by_base64_leaf_hash_verifies(sealed_log, api):
    data = sealed_log.statements[10]
    body = _inclusion(api, leaf_hash=base64.b64encode(merkle.leaf_hash(data)).decode())
    assert body["leaf_index"] == 10
    _verify_inclusion(body, sealed_log, data)


def test_an_inclusion_proof_by_url_safe_base64_leaf_hash_verifies(sealed_log, api):
    data = sealed_log.statements[4]
    encoded = base64.urlsafe_b64encode(merkle.leaf_hash(data)).decode()
    _verify_inclusion(_inclusion(api, leaf_hash=encoded), sealed_log, data)


def test_inclusion_proofs_for_older_checkpoints_verify_against_their_signed_roots(sealed_log, api):
    for size in sealed_log.sizes[1:]:
        for index in range(size):
            body = _inclusion(api, index=index, tree_size=size)
            assert body["tree_size"] == size
            _verify_inclusion(body, sealed_log, sealed_log.statements[index])


def test_an_inclusion_proof_for_an_older_size_by_leaf_hash_verifies(sealed_log, api):
    data = sealed_log.statements[1]
    body = _inclusion(api, leaf_hash=merkle.leaf_hash(data).hex(), tree_size=3)
    _verify_inclusion(body, sealed_log, data)


def test_an_inclusion_proof_at_a_size_between_checkpoints_verifies_against_its_root(
    sealed_log, api
):
    """Any sealed size has a proof; only checkpoint sizes have a signed root to compare with."""
    body = _inclusion(api, index=4, tree_size=5)
    proof = [b64decode(h) for h in body["hashes"]]
    root = merkle.root_hash([merkle.leaf_hash(s) for s in sealed_log.statements[:5]])
    assert b64decode(body["root_hash"]) == root
    merkle.verify_inclusion(4, 5, merkle.leaf_hash(sealed_log.statements[4]), proof, root)


def test_an_inclusion_proof_refuses_a_forged_leaf(sealed_log, api):
    body = _inclusion(api, index=2)
    proof = [b64decode(h) for h in body["hashes"]]
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(
            2, body["tree_size"], merkle.leaf_hash(b"forged"), proof, sealed_log.signed_root(12)
        )


# --- consistency proofs ----------------------------------------------------------------------


def _consistency(api, **params) -> dict:
    response = api.get(CONSISTENCY, params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("old,new", [(0, 3), (3, 7), (7, 12), (3, 12), (0, 12), (12, 12)])
def test_consistency_proofs_between_checkpoints_verify(sealed_log, api, old, new):
    body = _consistency(api, old_size=old, new_size=new)
    old_root, new_root = sealed_log.signed_root(old), sealed_log.signed_root(new)
    assert b64decode(body["old_root_hash"]) == old_root
    assert b64decode(body["new_root_hash"]) == new_root
    proof = [b64decode(h) for h in body["hashes"]]
    merkle.verify_consistency(old, new, old_root, new_root, proof)


def test_a_consistency_proof_defaults_to_the_latest_checkpoint(sealed_log, api):
    body = _consistency(api, old_size=7)
    assert body["new_size"] == sealed_log.size
    proof = [b64decode(h) for h in body["hashes"]]
    merkle.verify_consistency(
        7, sealed_log.size, sealed_log.signed_root(7), sealed_log.signed_root(12), proof
    )


def test_every_pair_of_sealed_sizes_has_a_consistency_proof_that_verifies(sealed_log, api):
    leaves = [merkle.leaf_hash(s) for s in sealed_log.statements]
    for new in range(sealed_log.size + 1):
        for old in range(new + 1):
            body = _consistency(api, old_size=old, new_size=new)
            merkle.verify_consistency(
                old,
                new,
                merkle.root_hash(leaves[:old]),
                merkle.root_hash(leaves[:new]),
                [b64decode(h) for h in body["hashes"]],
            )


# --- leaves ----------------------------------------------------------------------------------


def test_a_leaf_by_index_returns_its_statement(sealed_log, api):
    response = api.get("/api/v1/ledger/leaves/4")
    assert response.status_code == 200
    body = response.json()
    assert body["index"] == 4
    assert body["data"].encode() == sealed_log.statements[4]
    assert b64decode(body["leaf_hash"]) == merkle.leaf_hash(sealed_log.statements[4])
    assert body["sealed"] is True


def test_a_pending_leaf_is_returned_as_not_sealed(sealed_log, api):
    body = api.get(f"/api/v1/ledger/leaves/{sealed_log.size}").json()
    assert body["data"].encode() == sealed_log.pending[0]
    assert body["sealed"] is False


def test_a_leaf_names_the_member_that_anchored_it(sealed_log, api):
    assert api.get("/api/v1/ledger/leaves/2").json()["member"] == NORTHLAB


# --- bad input: 4xx with {"code", "detail"}, never a 500 ------------------------------------

UNKNOWN = hashlib.sha256(b"no such leaf").hexdigest()
BAD_QUERIES = {
    "tree-size-beyond-checkpoint": (INCLUSION, "index=0&tree_size=13", 422, "bad_size"),
    "tree-size-zero": (INCLUSION, "index=0&tree_size=0", 422, "bad_size"),
    "index-not-below-size": (INCLUSION, "index=5&tree_size=3", 422, "bad_size"),
    "index-equal-to-size": (INCLUSION, "index=3&tree_size=3", 422, "bad_size"),
    "index-of-no-leaf": (INCLUSION, "index=99", 404, "unknown_leaf"),
    "largest-index": (INCLUSION, f"index={2**63 - 1}", 404, "unknown_leaf"),
    "unknown-leaf-hash": (INCLUSION, f"leaf_hash={UNKNOWN}", 404, "unknown_leaf"),
    "malformed-leaf-hash": (INCLUSION, "leaf_hash=xyz", 400, "invalid"),
    "short-hex-leaf-hash": (INCLUSION, f"leaf_hash={UNKNOWN[:-1]}", 400, "invalid"),
    "non-hex-64-chars": (INCLUSION, "leaf_hash=" + "g" * 64, 400, "invalid"),
    "base64-of-31-bytes": (INCLUSION, "leaf_hash=" + "A" * 40 + "AA%3D%3D", 400, "invalid"),
    "empty-leaf-hash": (INCLUSION, "leaf_hash=", 400, "invalid"),
    "leaf-hash-with-nul": (INCLUSION, "leaf_hash=%00" + UNKNOWN[1:], 400, "invalid"),
    "very-long-leaf-hash": (INCLUSION, "leaf_hash=" + "a" * 5000, 400, "invalid"),
    "non-numeric-index": (INCLUSION, "index=abc", 400, "invalid"),
    "fractional-index": (INCLUSION, "index=1.5", 400, "invalid"),
    "negative-index": (INCLUSION, "index=-1", 400, "invalid"),
    "index-2-to-the-70": (INCLUSION, f"index={2**70}", 400, "invalid"),
    "index-of-5000-digits": (INCLUSION, "index=" + "9" * 5000, 400, "invalid"),
    "tree-size-2-to-the-70": (INCLUSION, f"index=0&tree_size={2**70}", 400, "invalid"),
    "negative-tree-size": (INCLUSION, "index=0&tree_size=-3", 400, "invalid"),
    "no-parameters": (INCLUSION, "", 400, "invalid"),
    "only-tree-size": (INCLUSION, "tree_size=3", 400, "invalid"),
    "index-and-leaf-hash": (INCLUSION, f"index=0&leaf_hash={UNKNOWN}", 400, "invalid"),
    "consistency-without-old-size": (CONSISTENCY, "", 400, "invalid"),
    "old-size-beyond-checkpoint": (CONSISTENCY, "old_size=13", 422, "bad_size"),
    "old-size-above-new-size": (CONSISTENCY, "old_size=7&new_size=3", 422, "bad_size"),
    "new-size-beyond-checkpoint": (CONSISTENCY, "old_size=3&new_size=13", 422, "bad_size"),
    "new-size-2-to-the-70": (CONSISTENCY, f"old_size=3&new_size={2**70}", 400, "invalid"),
    "negative-old-size": (CONSISTENCY, "old_size=-1", 400, "invalid"),
    "non-numeric-old-size": (CONSISTENCY, "old_size=seven", 400, "invalid"),
    "old-size-2-to-the-70": (CONSISTENCY, f"old_size={2**70}", 400, "invalid"),
    "no-such-leaf": ("/api/v1/ledger/leaves/99", "", 404, "unknown_leaf"),
    "leaf-2-to-the-70": (f"/api/v1/ledger/leaves/{2**70}", "", 404, "unknown_leaf"),
    "leaf-of-5000-digits": ("/api/v1/ledger/leaves/" + "9" * 5000, "", 404, None),
    "negative-leaf": ("/api/v1/ledger/leaves/-1", "", 404, "not_found"),
    "non-numeric-leaf": ("/api/v1/ledger/leaves/abc", "", 404, "not_found"),
    "unknown-endpoint": ("/api/v1/ledger/nothing", "", 404, "not_found"),
}


@pytest.mark.parametrize("case", BAD_QUERIES)
def test_bad_input_answers_a_4xx_json_error(sealed_log, api, case):
    path, query, status, code = BAD_QUERIES[case]
    assert_error(api.get(f"{path}?{query}" if query else path), status, code)


def test_a_leaf_not_sealed_yet_has_no_inclusion_proof_by_index(sealed_log, api):
    response = api.get(INCLUSION, {"index": sealed_log.size})
    assert_error(response, 422, "bad_size")


def test_a_leaf_not_sealed_yet_has_no_inclusion_proof_by_leaf_hash(sealed_log, api):
    leaf_hash = merkle.leaf_hash(sealed_log.pending[1]).hex()
    assert_error(api.get(INCLUSION, {"leaf_hash": leaf_hash}), 422, "bad_size")


@pytest.mark.parametrize("path", [INCLUSION + "?index=0", CONSISTENCY + "?old_size=3", CHECKPOINT])
def test_an_unknown_format_parameter_answers_a_404_with_a_stable_code_and_a_detail(
    sealed_log, api, path
):
    """Bug: DRF's content negotiation raises Django's Http404 for ?format=<unknown>, and
    config/errors.py answers {"code": "error", "detail": ""} instead of DRF's not_found."""
    assert_error(api.get(path + ("&" if "?" in path else "?") + "format=xml"), 404, "not_found")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_answer_405_json(sealed_log, api, method):
    response = getattr(api, method)(ANCHORS)
    assert_error(response, 405, "method_not_allowed")


def test_an_unacceptable_accept_header_answers_406_json(sealed_log, api):
    response = api.get(INCLUSION, {"index": 0}, HTTP_ACCEPT="application/xml")
    assert_error(response, 406, "not_acceptable")


def test_an_invalid_field_error_names_the_field(sealed_log, api):
    body = assert_error(api.get(INCLUSION, {"index": "-1"}), 400, "invalid")
    assert "index" in body["fields"]


# --- OpenAPI ---------------------------------------------------------------------------------


def test_the_openapi_schema_renders_with_every_ledger_endpoint(db, api):
    response = api.get("/api/v1/schema")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ("/api/v1/anchors", "/api/v1/ledger/checkpoint", "/api/v1/ledger/proofs/inclusion"):
        assert path in text


def test_the_api_docs_page_answers_200(db, api):
    response = api.get("/api/v1/docs")
    assert response.status_code == 200
    assert b"/api/v1/schema" in response.content


def test_the_sealed_log_fixture_has_one_checkpoint_per_batch(sealed_log):
    sizes = [0]
    for batch in BATCHES:
        sizes.append(sizes[-1] + batch)
    assert sealed_log.sizes == sizes
