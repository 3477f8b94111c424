"""The claim submission format (docs/claim-format.md) against its vectors (vectors/claim_v1.json).

``build_vectors()`` derives every vector from fixed inputs (official HL7 examples, a published
test key, a fixed salt and leaf); the test reproduces the stored file byte for byte, checks the
JWS with ``cryptography``, and runs every negative vector to the stage that must refuse it.
Regenerate after a deliberate format change with ``python -m tests.claims.test_disclosure``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import difflib
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from claims import disclosure, jws
from claims.disclosure import DisclosureError
from claims.jws import JwsError
from ledger import anchor, merkle

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
VECTOR_FILE = VECTORS / "claim_v1.json"
EXAMPLES = ROOT.parent / "shared" / "fhir-examples" / "r4"
RFC8037 = json.loads((VECTORS / "rfc8037_jose_ed25519.json").read_text("utf-8"))
ANCHOR_V1 = json.loads((VECTORS / "anchor_v1.json").read_text("utf-8"))

KEY = {**RFC8037["private_jwk"], "kid": RFC8037["thumbprint"]}
PUBLIC_JWK = {**RFC8037["public_jwk"], "kid": RFC8037["thumbprint"]}
OTHER_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
SALT = hashlib.sha256(b"ClaimProof claim_v1 vector salt").digest()
LEAF_INDEX = 41
CLAIM_URL = "urn:uuid:6f0b5a0e-3c1d-4f7e-9a2b-5d8c7e6f1a00"
PROCEDURE_URL = "urn:uuid:6f0b5a0e-3c1d-4f7e-9a2b-5d8c7e6f1a01"
ANCHORED_AT = datetime(2013, 4, 5, 18, 0, 0, tzinfo=UTC)
SIGNED_AT = "2014-08-16T10:30:00Z"
WHO = "Organization/1"
STAGES = ("canonical", "signature", "jws", "verify", "disclosure")


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text("utf-8"))


def _dumps(value: object) -> str:
    """How the vectors write a body that is sent: indented, UTF-8, a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _claim_with_procedure(procedure_url: str) -> dict:
    """Claim/100150 plus what billing the Procedure adds: Claim.procedure, procedureSequence."""
    claim = _example("Claim-100150.json")
    out: dict = {}
    for key, value in claim.items():
        out[key] = value
        if key == "diagnosis":  # FHIR element order: diagnosis, procedure, insurance
            out["procedure"] = [
                {"sequence": 1, "date": "2013-04-05",
                 "procedureReference": {"reference": procedure_url}}
            ]  # fmt: skip
    out["item"][0]["procedureSequence"] = [1]
    return out


def _anchor(procedure: dict, salt: bytes) -> tuple[bytes, bytes]:
    """A real anchor statement for the Procedure (anchor_v1's test key) and its leaf hash."""
    commitment = anchor.commitment(salt, procedure)
    statement = anchor.statement_sign(
        commitment=commitment, signer_key=ANCHOR_V1["signer_key"], timestamp=ANCHORED_AT
    )
    return statement, merkle.leaf_hash(statement)


def _bundle(entries: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "id": "claimproof-claim-v1",
        "type": "collection",
        "timestamp": SIGNED_AT,
        "entry": entries,
    }


def _sign(bundle: dict, key: dict = KEY) -> dict:
    return disclosure.sign_bundle(bundle, key, KEY["kid"], who=WHO, when=SIGNED_AT)


def _with_signature_data(signed: dict, data: str) -> dict:
    out = copy.deepcopy(signed)
    out["signature"]["data"] = data
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def _jws_with_header(header: dict, payload: bytes, *, attached: bool = False) -> str:
    """A JWS over ``payload`` with any header, signed with the vector key (for negative vectors)."""
    h = jws.b64url(json.dumps(header, separators=(",", ":")).encode())
    signature = jws._signing_key(KEY).sign(f"{h}.{jws.b64url(payload)}".encode()).signature
    return f"{h}.{jws.b64url(payload) if attached else ''}.{jws.b64url(signature)}"


def build_vectors() -> dict:
    claim = _claim_with_procedure(PROCEDURE_URL)
    procedure = _example("Procedure-example.json")
    statement, leaf_hash = _anchor(procedure, SALT)
    entry = disclosure.disclose(procedure, SALT, LEAF_INDEX, leaf_hash, PROCEDURE_URL)
    unsigned = _bundle([{"fullUrl": CLAIM_URL, "resource": claim}, entry])
    payload = rfc8785.dumps(unsigned)
    signed = _sign(unsigned)
    compact = base64.b64decode(signed["signature"]["data"]).decode("ascii")
    header_b64 = compact.split(".")[0]
    body = _dumps(signed)
    kid = KEY["kid"]

    def sub(text: str, old: str, new: str, count: int = -1) -> str:
        assert old in text, old
        return text.replace(old, new, count)

    def resigned(mutate) -> str:
        bundle = copy.deepcopy(unsigned)
        mutate(bundle)
        return _dumps(_sign(bundle))

    equivalent = [
        ("trailing_zeros", "135.57 written 135.5700: the same IEEE double, the same JCS",
         sub(body, "135.57", "135.5700")),
        ("exponent", "135.57 written 1.3557E2", sub(body, "135.57", "1.3557E2")),
        ("unicode_escape", "a character written as a \\u escape (also inside the Procedure)",
         sub(body, '"text": "Appendectomy"', '"text": "\\u0041ppendectomy"')),
        ("solidus_escape", "'/' written '\\/'",
         sub(body, '"http://snomed.info/sct"', '"http:\\/\\/snomed.info\\/sct"')),
        ("compact_sorted", "no whitespace, keys sorted by a plain sort",
         json.dumps(signed, sort_keys=True, separators=(",", ":"))),
        ("reversed_key_order", "every object's members in reverse order",
         json.dumps(json.loads(body, object_pairs_hook=lambda p: dict(reversed(p))))),
    ]  # fmt: skip

    def unsigned_entry(mutate) -> str:
        def go(bundle: dict) -> None:
            mutate(bundle["entry"][1])

        return resigned(go)

    def second_procedure(bundle: dict) -> None:
        again = copy.deepcopy(bundle["entry"][1])
        again["fullUrl"] = "urn:uuid:6f0b5a0e-3c1d-4f7e-9a2b-5d8c7e6f1a02"
        again["resource"] = {**again["resource"], "id": "example-2"}
        bundle["entry"].append(again)

    def sub_extension(name: str, new: dict):
        def go(e: dict) -> None:
            subs = e["extension"][0]["extension"]
            subs[[s["url"] for s in subs].index(name)] = new

        return go

    def disclosure_inside(e: dict) -> None:
        e["resource"] = {**e["resource"], "extension": e.pop("extension")}

    other = bytes(SigningKey(OTHER_SEED).verify_key)
    wrong_key = {**KEY, "d": jws.b64url(OTHER_SEED), "x": jws.b64url(other)}
    alg_confusion_header = jws.b64url(json.dumps({"alg": "HS256", "kid": kid}).encode())
    mac = hmac.new(
        base64.urlsafe_b64decode(KEY["x"] + "="),
        f"{alg_confusion_header}.{jws.b64url(payload)}".encode(),
        "sha256",
    ).digest()
    flipped = bytearray(base64.urlsafe_b64decode(compact.split(".")[2] + "=="))
    flipped[10] ^= 0x01

    negative = [
        # canonical_payload
        ("integer_beyond_2_53", "canonical", "2^53", "an amount written as an integer > 2^53",
         sub(body, '"value": 135.57', '"value": 9007199254740993', 1)),
        ("nan", "canonical", "NaN is not JSON", "NaN is not JSON",
         sub(body, '"value": 135.57', '"value": NaN', 1)),
        ("infinite_number", "canonical", "cannot be canonicalised", "1e400 overflows a double",
         sub(body, '"value": 135.57', '"value": 1e400', 1)),
        ("duplicate_member", "canonical", "repeats the member", "a member twice in one object",
         sub(body, '"type": "collection",', '"type": "collection",\n  "type": "collection",')),
        ("lone_surrogate", "canonical", "cannot be canonicalised", "an unpaired UTF-16 surrogate",
         sub(body, '"text": "Appendectomy"', '"text": "\\ud800ppendectomy"')),
        ("top_level_array", "canonical", "JSON object", "a Bundle inside an array",
         "[" + body + "]"),
        ("byte_order_mark", "canonical", "not JSON", "a UTF-8 byte order mark", "\ufeff" + body),
        # signature_jws
        ("missing_signature", "signature", "no signature", "an unsigned Bundle", _dumps(unsigned)),
        ("raw_jws_in_data", "signature", "base64 of the JWS, not the JWS itself",
         "the compact JWS itself in Signature.data", _dumps(_with_signature_data(signed, compact))),
        ("base64url_data", "signature", "not base64url", "base64url instead of base64",
         _dumps(_with_signature_data(signed, "-" + signed["signature"]["data"][1:]))),
        ("data_not_a_jws", "signature", "does not decode to an ASCII compact JWS",
         "base64 of something else", _dumps(_with_signature_data(signed, _b64("hello world")))),
        ("wrong_sig_format", "signature", "sigFormat", "sigFormat application/signature+xml",
         sub(body, '"application/jose"', '"application/signature+xml"')),
        ("not_an_author_signature", "signature", "Author's Signature",
         "Signature.type is the verification signature (1.2.840.10065.1.12.1.5)",
         sub(body, '"1.2.840.10065.1.12.1.1"', '"1.2.840.10065.1.12.1.5"')),
        ("when_not_an_instant", "signature", "FHIR instant", "Signature.when without a zone",
         sub(body, f'"when": "{SIGNED_AT}"', '"when": "2014-08-16T10:30:00"')),
        # parse_detached
        ("alg_none", "jws", "alg none", "an unsecured JWS",
         _dumps(_with_signature_data(signed, _b64(
             jws.b64url(json.dumps({"alg": "none", "kid": kid}).encode()) + "..")))),
        ("alg_hs256_with_the_public_key", "jws", "alg EdDSA",
         "the alg-confusion attack: HS256 keyed with the provider's public key",
         _dumps(_with_signature_data(signed, _b64(f"{alg_confusion_header}..{jws.b64url(mac)}")))),
        ("attached_payload", "jws", "detached", "the payload inside the JWS",
         _dumps(_with_signature_data(signed, _b64(_jws_with_header(
             {"alg": "EdDSA", "kid": kid}, payload, attached=True))))),
        ("missing_kid", "jws", "no kid", "a header without kid",
         _dumps(_with_signature_data(signed, _b64(_jws_with_header({"alg": "EdDSA"}, payload))))),
        ("crit_header", "jws", "crit", "a critical extension",
         _dumps(_with_signature_data(signed, _b64(_jws_with_header(
             {"alg": "EdDSA", "crit": ["exp"], "exp": 1408185000, "kid": kid}, payload))))),
        ("b64_false", "jws", "b64", "an RFC 7797 unencoded payload",
         _dumps(_with_signature_data(signed, _b64(_jws_with_header(
             {"alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": kid}, payload))))),
        ("short_signature", "jws", "64 bytes", "a 63-byte signature",
         _dumps(_with_signature_data(signed, _b64(f"{header_b64}..{jws.b64url(bytes(63))}")))),
        # verify_detached
        ("tampered_amount", "verify", "does not verify", "Claim.item.net changed after signing",
         sub(body, '"value": 135.57', '"value": 1135.57', 2).replace(
             '"value": 1135.57', '"value": 135.57', 1)),
        ("tampered_procedure", "verify", "does not verify", "the Procedure's date changed",
         sub(body, '"performedDateTime": "2013-04-05"', '"performedDateTime": "2013-04-06"')),
        ("tampered_disclosure", "verify", "does not verify",
         "leafIndex changed: the disclosure is signed too",
         sub(body, f'"valueString": "{LEAF_INDEX}"', f'"valueString": "{LEAF_INDEX + 1}"')),
        ("another_key", "verify", "does not verify", "signed with another key under this kid",
         _dumps(_sign(unsigned, wrong_key))),
        ("flipped_signature_bit", "verify", "does not verify", "one bit of the signature",
         _dumps(_with_signature_data(signed, _b64(
             f"{header_b64}..{jws.b64url(bytes(flipped))}")))),
        # disclosed_procedures (each re-signed: only the disclosure is wrong)
        ("missing_disclosure", "disclosure", "has no anchor disclosure",
         "a Procedure entry without its extension", unsigned_entry(lambda e: e.pop("extension"))),
        ("disclosure_inside_procedure", "disclosure", "not inside the Procedure",
         "the disclosure moved into the Procedure resource", unsigned_entry(disclosure_inside)),
        ("two_disclosures", "disclosure", "2 anchor disclosures", "the extension twice",
         unsigned_entry(lambda e: e["extension"].append(copy.deepcopy(e["extension"][0])))),
        ("salt_31_bytes", "disclosure", "salt must be 32 bytes", "a short salt",
         unsigned_entry(sub_extension("salt", {
             "url": "salt", "valueBase64Binary": base64.b64encode(SALT[:31]).decode()}))),
        ("leaf_index_as_integer", "disclosure", "leafIndex must be a valueString",
         "valueInteger: R4 integers are 32-bit", unsigned_entry(sub_extension(
             "leafIndex", {"url": "leafIndex", "valueInteger": LEAF_INDEX}))),
        ("leaf_index_leading_zero", "disclosure", "without leading zeros", "leafIndex 041",
         unsigned_entry(sub_extension("leafIndex", {"url": "leafIndex", "valueString": "041"}))),
        ("leaf_hash_missing", "disclosure", "exactly the sub-extensions", "no leafHash",
         unsigned_entry(lambda e: e["extension"][0]["extension"].pop())),
        ("same_leaf_twice", "disclosure", "again", "two Procedures disclosing one leaf",
         resigned(second_procedure)),
        ("procedure_without_full_url", "disclosure", "needs a fullUrl", "no fullUrl",
         unsigned_entry(lambda e: e.pop("fullUrl"))),
        ("two_claims", "disclosure", "exactly one Claim", "a second Claim entry",
         resigned(lambda b: b["entry"].append({"fullUrl": "urn:uuid:0", "resource": claim}))),
        ("other_resource", "disclosure", "and optionally", "an Observation entry",
         resigned(lambda b: b["entry"].append(
             {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Observation", "id": "1"}}))),
        ("not_a_collection", "disclosure", "collection", "Bundle.type transaction",
         resigned(lambda b: b.update(type="transaction"))),
    ]  # fmt: skip

    canonicalisation = [
        ("trailing_zeros", '{"value":105.00}', '{"value":105}'),
        ("exponent", '{"value":1e2}', '{"value":100}'),
        ("small_number", '{"value":1E-7}', '{"value":1e-7}'),
        ("large_number", '{"value":1e21}', '{"value":1e+21}'),
        ("float_beyond_2_53", '{"value":1e16}', '{"value":10000000000000000}'),
        ("largest_safe_integer", '{"value":9007199254740991}', '{"value":9007199254740991}'),
        ("negative_zero", '{"value":-0.0}', '{"value":0}'),
        ("shortest_round_trip", '{"value":0.30000000000000004}', '{"value":0.30000000000000004}'),
        ("escapes", '{"text":"\\u00e9\\u20ac\\/\\u000f\\n\\"\\\\"}',
         '{"text":"é€/\\u000f\\n\\"\\\\"}'),
        ("utf16_key_order", '{"\\ue000":1,"\\ud83d\\ude00":2,"a":3}', '{"a":3,"😀":2,"\ue000":1}'),
        ("whitespace", ' {\n "b" : [ 1 , true , null ] ,\t"a" : { } }\n',
         '{"a":{},"b":[1,true,null]}'),
        ("signature_dropped", '{"b":1,"signature":{"data":"x"},"a":2}', '{"a":2,"b":1}'),
        ("nested_signature_kept", '{"a":{"signature":1}}', '{"a":{"signature":1}}'),
        ("integer_2_53", '{"value":9007199254740992}', None),
        ("integer_beyond_2_53", '{"value":9007199254740993}', None),
        ("nan", '{"value":NaN}', None),
        ("infinity", '{"value":-Infinity}', None),
        ("overflow", '{"value":1e400}', None),
        ("duplicate_key", '{"a":1,"a":1}', None),
        ("lone_surrogate", '{"a":"\\udc00"}', None),
        ("top_level_string", '"Bundle"', None),
        ("trailing_comma", '{"a":1,}', None),
        ("depth_65", '{"a":' * 65 + "1" + "}" * 65, None),
        ("depth_64", '{"a":' * 64 + "1" + "}" * 64, '{"a":' * 64 + "1" + "}" * 64),
    ]  # fmt: skip

    return {
        "description": (
            "Test vectors for the ClaimProof claim submission format, version 1: a FHIR R4 "
            "collection Bundle (one Claim, the Procedures it bills, each disclosed in "
            "Bundle.entry.extension) signed with a detached compact JWS (EdDSA) in "
            "Bundle.signature.data over the RFC 8785 canonical JSON of the Bundle without its "
            "signature. Specification: docs/claim-format.md."
        ),
        "test_key_warning": (
            "PUBLISHED TEST KEY: the private JWK is RFC 8037 Appendix A.1's (= RFC 8032 TEST 1). "
            "It is printed in two RFCs so that anyone can reproduce these signatures; it is never "
            "a provider key anywhere."
        ),
        "sources": {
            "claim": (
                "HL7 FHIR R4 4.0.1 example Claim/100150 (claim-example.json, package "
                "hl7.fhir.r4.examples 4.0.1), with Claim.procedure[0] (a procedureReference to the "
                "Procedure entry's fullUrl) and Claim.item[0].procedureSequence [1] added"
            ),
            "procedure": (
                "HL7 FHIR R4 4.0.1 example Procedure/example (procedure-example.json), unmodified"
            ),
            "private_jwk": "RFC 8037 Appendix A.1, https://www.rfc-editor.org/rfc/rfc8037#appendix-A.1",
            "kid": "RFC 8037 Appendix A.3 (the RFC 7638 thumbprint of the key)",
            "anchor_key": "tests/vectors/anchor_v1.json (published anchor test key)",
        },
        "private_jwk": KEY,
        "public_jwk": PUBLIC_JWK,
        "who": WHO,
        "when": SIGNED_AT,
        "disclosure": {
            "full_url": PROCEDURE_URL,
            "salt_hex": SALT.hex(),
            "salt_base64": base64.b64encode(SALT).decode(),
            "procedure_jcs": rfc8785.dumps(procedure).decode("utf-8"),
            "commitment_hex": anchor.commitment(SALT, procedure).hex(),
            "anchor_timestamp": ANCHORED_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "anchor_statement": statement.decode("utf-8"),
            "leaf_index": LEAF_INDEX,
            "leaf_hash_hex": leaf_hash.hex(),
            "leaf_hash_base64": base64.b64encode(leaf_hash).decode(),
        },
        "unsigned_bundle": unsigned,
        "canonical_payload": payload.decode("utf-8"),
        "canonical_payload_sha256": hashlib.sha256(payload).hexdigest(),
        "protected_header": base64.urlsafe_b64decode(header_b64 + "==").decode("ascii"),
        "signing_input": f"{header_b64}.{jws.b64url(payload)}",
        "jws": compact,
        "signature_data": signed["signature"]["data"],
        "signed_bundle": signed,
        "body": body,
        "equivalent_bodies": [
            {"name": n, "description": d, **_derived(body, b)} for n, d, b in equivalent
        ],
        "negative": [
            {"name": n, "stage": s, "error": e, "description": d, **_derived(body, b)}
            for n, s, e, d, b in negative
        ],
        "canonicalisation": [
            {"name": n, "input": i, "canonical": c} for n, i, c in canonicalisation
        ],
    }


def _edits(base: str, derived: str) -> list[dict[str, str]]:
    """Line-based edits turning ``base`` into ``derived``; each ``old`` occurs exactly once."""
    out, current, goal = [], base, derived.splitlines(keepends=True)
    while current != derived:
        lines = current.splitlines(keepends=True)
        ops = difflib.SequenceMatcher(None, lines, goal, autojunk=False).get_opcodes()
        index = next(n for n, op in enumerate(ops) if op[0] != "equal")
        _, i1, i2, j1, j2 = ops[index]
        after = ops[index + 1][2] - ops[index + 1][1] if index + 1 < len(ops) else 0
        while not (old := "".join(lines[i1:i2])) or current.count(old) != 1:
            if after:  # widen with the unchanged lines that follow, then those before
                i2, j2, after = i2 + 1, j2 + 1, after - 1
            else:
                i1, j1 = i1 - 1, j1 - 1
        new = "".join(goal[j1:j2])
        out.append({"old": old, "new": new})
        current = current.replace(old, new)
    return out


def _derived(base: str, derived: str) -> dict:
    """A body given as edits of the vector's ``body`` (or whole, when it is rewritten)."""
    edits = _edits(base, derived)
    short = sum(len(e["old"]) + len(e["new"]) for e in edits) < len(derived) // 2
    return {"edits": edits} if short else {"body": derived}


def _apply(vector: dict, base: str) -> bytes:
    """What a consumer of the vector file does: the body, or the edits applied in order."""
    if "body" in vector:
        return vector["body"].encode("utf-8")
    text = base
    for edit in vector["edits"]:
        assert text.count(edit["old"]) == 1, edit["old"]
        text = text.replace(edit["old"], edit["new"])
    return text.encode("utf-8")


def _vector_text(vectors: dict) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


V = json.loads(VECTOR_FILE.read_text("utf-8")) if VECTOR_FILE.exists() else {}
PUBLIC = jws.public_jwk_parse(PUBLIC_JWK)


def _run(body: bytes, until: str | None = None) -> list[disclosure.Disclosed]:
    """The verifier's pipeline in stage order; ``until`` is the stage expected to raise."""
    for stage in STAGES:
        if stage == "canonical":
            bundle, payload = disclosure.canonical_payload(body)
        elif stage == "signature":
            compact = disclosure.signature_jws(bundle)
        elif stage == "jws":
            detached = jws.parse_detached(compact)
        elif stage == "verify":
            jws.verify_detached(detached, payload, PUBLIC)
        else:
            return disclosure.disclosed_procedures(bundle)
        assert stage != until, f"stage {stage} accepted what it must refuse"
    raise AssertionError("unreachable")


# --- the vector file -------------------------------------------------------------------------


def test_the_vector_file_is_reproduced_byte_for_byte() -> None:
    assert VECTOR_FILE.read_text("utf-8") == _vector_text(build_vectors())


def test_the_vector_key_is_the_published_rfc8037_key() -> None:
    assert "PUBLISHED TEST KEY" in V["test_key_warning"]
    assert V["private_jwk"]["d"] == RFC8037["private_jwk"]["d"]
    assert V["public_jwk"]["kid"] == jws.thumbprint(V["public_jwk"]) == RFC8037["thumbprint"]


def test_the_vector_bundle_is_built_from_the_official_examples() -> None:
    claim, entry = (e for e in V["unsigned_bundle"]["entry"])
    assert entry["resource"] == _example("Procedure-example.json")
    official = _example("Claim-100150.json")
    added = {k: v for k, v in claim["resource"].items() if k not in official}
    assert list(added) == ["procedure"]
    assert added["procedure"][0]["procedureReference"]["reference"] == entry["fullUrl"]
    item = dict(claim["resource"]["item"][0])
    assert item.pop("procedureSequence") == [1]
    assert {**claim["resource"], "item": [item], "procedure": None} == {
        **official,
        "procedure": None,
    }


def test_the_body_verifies_and_every_vector_value_is_what_the_format_says() -> None:
    body = V["body"].encode("utf-8")
    bundle, payload = disclosure.canonical_payload(body)
    assert payload == V["canonical_payload"].encode("utf-8")
    assert hashlib.sha256(payload).hexdigest() == V["canonical_payload_sha256"]
    # Independently of claims/: the payload is JCS of the received JSON minus "signature".
    received = json.loads(body)
    assert received == V["signed_bundle"]
    del received["signature"]
    assert rfc8785.dumps(received) == payload
    assert received == V["unsigned_bundle"]

    signature = V["signed_bundle"]["signature"]
    assert signature["data"] == V["signature_data"]
    assert base64.b64decode(signature["data"], validate=True).decode("ascii") == V["jws"]
    assert disclosure.signature_jws(bundle) == V["jws"]
    assert signature == {
        "type": [
            {
                "system": "urn:iso-astm:E1762-95:2013",
                "code": "1.2.840.10065.1.12.1.1",
                "display": "Author's Signature",
            }
        ],
        "when": V["when"],
        "who": {"reference": V["who"]},
        "sigFormat": "application/jose",
        "data": V["signature_data"],
    }

    header_b64, middle, signature_b64 = V["jws"].split(".")
    assert middle == ""
    assert V["protected_header"] == f'{{"alg":"EdDSA","kid":"{RFC8037["thumbprint"]}"}}'
    assert base64.urlsafe_b64decode(header_b64 + "==") == V["protected_header"].encode()
    payload_b64 = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    assert V["signing_input"] == f"{header_b64}.{payload_b64}"
    # The JWS checked with a second Ed25519 implementation.
    Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(V["public_jwk"]["x"] + "=")).verify(
        base64.urlsafe_b64decode(signature_b64 + "=="), V["signing_input"].encode()
    )

    [disclosed] = _run(body)
    d = V["disclosure"]
    assert disclosed.full_url == d["full_url"]
    assert disclosed.procedure == _example("Procedure-example.json")
    assert disclosed.salt.hex() == d["salt_hex"]
    assert disclosed.leaf_index == d["leaf_index"]
    assert disclosed.leaf_hash.hex() == d["leaf_hash_hex"]
    assert disclosed.commitment.hex() == d["commitment_hex"]
    # The commitment by hand, and the anchor leaf it is on (a real anchor_v1 statement).
    salt = bytes.fromhex(d["salt_hex"])
    assert rfc8785.dumps(disclosed.procedure).decode() == d["procedure_jcs"]
    assert hashlib.sha256(salt + d["procedure_jcs"].encode()).hexdigest() == d["commitment_hex"]
    leaf = d["anchor_statement"].encode()
    assert hashlib.sha256(b"\x00" + leaf).hexdigest() == d["leaf_hash_hex"]
    statement = anchor.statement_parse(leaf)
    assert statement.commitment.hex() == d["commitment_hex"]
    anchor.statement_verify(statement, ANCHOR_V1["verifier_key"])


@pytest.mark.parametrize("vector", V.get("equivalent_bodies", []), ids=lambda v: v["name"])
def test_equivalent_bodies_canonicalise_to_the_same_payload_and_verify(vector: dict) -> None:
    body = _apply(vector, V["body"])
    assert body != V["body"].encode("utf-8")
    assert disclosure.canonical_payload(body)[1] == V["canonical_payload"].encode("utf-8")
    [disclosed] = _run(body)
    assert disclosed.commitment.hex() == V["disclosure"]["commitment_hex"]


def test_a_sorted_json_dumps_is_not_rfc8785_on_official_examples() -> None:
    """The trap JCS exists for: Claim/100151 writes 1000.00, a sorted json.dumps writes 1000.0."""
    received = json.loads((EXAMPLES / "Claim-100151.json").read_bytes())
    naive = json.dumps(received, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"value":1000.0}' in naive
    assert b'"value":1000}' in rfc8785.dumps(received)


@pytest.mark.parametrize("vector", V.get("negative", []), ids=lambda v: v["name"])
def test_negative_vectors_are_refused_at_their_stage(vector: dict) -> None:
    error = (
        DisclosureError if vector["stage"] in {"canonical", "signature", "disclosure"} else JwsError
    )
    with pytest.raises(error) as raised:
        _run(_apply(vector, V["body"]), until=vector["stage"])
    assert vector["error"] in str(raised.value)


@pytest.mark.parametrize("vector", V.get("canonicalisation", []), ids=lambda v: v["name"])
def test_canonicalisation_vectors(vector: dict) -> None:
    body = vector["input"].encode("utf-8")
    if vector["canonical"] is None:
        with pytest.raises(DisclosureError):
            disclosure.canonical_payload(body)
        return
    assert disclosure.canonical_payload(body)[1] == vector["canonical"].encode("utf-8")
    unsigned = {k: v for k, v in json.loads(body).items() if k != "signature"}
    assert rfc8785.dumps(unsigned) == vector["canonical"].encode("utf-8")  # what rfc8785 says


# --- functions, one by one --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff{}", "not UTF-8"),
        (b"{}" + b" " * 3 + b"x", "not JSON"),
        (b'{"a":"\\ud800"}', "cannot be canonicalised"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests deeper"),
        (b'{"a":' + b"1" * 5000 + b"}", "not JSON"),
        (b'{"value":-9007199254740992}', "2^53"),
    ],
)
def test_canonical_payload_refuses(body: bytes, error: str) -> None:
    with pytest.raises(DisclosureError, match=re.escape(error)):
        disclosure.canonical_payload(body)


def test_canonical_payload_keeps_the_parsed_signature_and_drops_it_from_the_payload() -> None:
    bundle, payload = disclosure.canonical_payload(V["body"].encode())
    assert "signature" in bundle
    assert b"signature" not in payload


def _signed_vector() -> dict:
    return copy.deepcopy(V["signed_bundle"])


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda b: b.update(signature=[]), "FHIR Signature"),
        (lambda b: b["signature"].pop("sigFormat"), "sigFormat"),
        (lambda b: b["signature"].update(type=[]), "Author's Signature"),
        (lambda b: b["signature"].update(type="x"), "Author's Signature"),
        (lambda b: b["signature"].pop("who"), "who"),
        (lambda b: b["signature"].update(who="Organization/1"), "who"),
        (lambda b: b["signature"].update(when="2014-08-16"), "instant"),
        (lambda b: b["signature"].pop("data"), "data must hold"),
        (lambda b: b["signature"].update(data=""), "data must hold"),
        (lambda b: b["signature"].update(data=7), "data must hold"),
        (lambda b: b["signature"].update(data=b["signature"]["data"][:-1]), "padding"),
        (lambda b: b["signature"].update(data=" " + b["signature"]["data"]), "no whitespace"),
        (lambda b: b["signature"].update(data="QR=="), "stray bits"),
        (lambda b: b["signature"].update(data=base64.b64encode(b"\xff..\xff").decode()), "ASCII"),
        (lambda b: b["signature"].update(data=_b64("a.b")), "compact JWS"),
    ],
)
def test_signature_jws_refuses(mutate, error: str) -> None:
    bundle = _signed_vector()
    mutate(bundle)
    with pytest.raises(DisclosureError, match=error):
        disclosure.signature_jws(bundle)


def test_a_raw_jws_in_data_is_named_for_what_it_is() -> None:
    bundle = _signed_vector()
    bundle["signature"]["data"] = V["jws"]
    with pytest.raises(DisclosureError) as raised:
        disclosure.signature_jws(bundle)
    assert str(raised.value) == "Signature.data must be base64 of the JWS, not the JWS itself"


def test_claim_returns_the_one_claim() -> None:
    assert disclosure.claim(V["signed_bundle"])["id"] == "100150"
    bundle = _signed_vector()
    bundle["entry"] = bundle["entry"][1:]
    with pytest.raises(DisclosureError, match="exactly one Claim, not 0"):
        disclosure.claim(bundle)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda b: b.update(resourceType="Claim"), "FHIR Bundle"),
        (lambda b: b.update(entry={}), "list of entries"),
        (lambda b: b.update(entry=[1]), "list of entries"),
        (lambda b: b["entry"][1].pop("resource"), "no resource"),
        (lambda b: b["entry"][1].update(extension={}), "must be a list"),
        (lambda b: b["entry"][1].update(fullUrl="urn:uuid:a b"), "without spaces"),
        (lambda b: b["entry"][1].update(fullUrl=b["entry"][0]["fullUrl"]), "not unique"),
        (lambda b: b["entry"][1].update(modifierExtension=[{"url": "x"}]), "modifierExtension"),
        (lambda b: b.update(entry=b["entry"][:1]), "bills no Procedure"),
        (lambda b: b["entry"][0].update(extension=b["entry"][1]["extension"]), "is the Claim"),
        (lambda b: b["entry"][1]["extension"][0].update(valueString="x"), "no value[x]"),
        (lambda b: b["entry"][1]["extension"][0].update(extension="x"), "sub-extensions"),
        (lambda b: b["entry"][1]["extension"][0]["extension"][0].update(valueString="x"), "salt"),
        (lambda b: b["entry"][1]["extension"][0]["extension"][1].update(valueString="-1"), "0 to"),
        (lambda b: b["entry"][1]["extension"][0]["extension"][1].update(valueString=str(2**63)),
         "2^63-1"),
        (lambda b: b["entry"][1]["extension"][0]["extension"][2].update(valueBase64Binary="AA=="),
         "leafHash must be 32"),
        (lambda b: b["entry"][1]["extension"][0]["extension"][2].update(valueBase64Binary="A"),
         "leafHash must be standard base64"),
        (lambda b: b["entry"][1]["resource"].update(x=2**60), "cannot be canonicalised"),
    ],
)  # fmt: skip
def test_disclosed_procedures_refuses(mutate, error: str) -> None:
    bundle = _signed_vector()
    mutate(bundle)
    with pytest.raises(DisclosureError, match=re.escape(error)):
        disclosure.disclosed_procedures(bundle)


def test_disclosed_procedures_accepts_unrelated_extensions_and_the_largest_leaf_index() -> None:
    bundle = _signed_vector()
    entry = bundle["entry"][1]
    entry["extension"].insert(0, {"url": "https://example.org/other", "valueString": "x"})
    entry["extension"][1]["extension"][1]["valueString"] = str(2**63 - 1)
    [disclosed] = disclosure.disclosed_procedures(bundle)
    assert disclosed.leaf_index == 2**63 - 1 and disclosed.entry == 1


def test_disclose_builds_exactly_the_documented_entry() -> None:
    procedure = _example("Procedure-example.json")
    entry = disclosure.disclose(procedure, SALT, 7, bytes(range(32)), "urn:uuid:x")
    assert entry == {
        "extension": [
            {
                "url": "https://claimproof.example/fhir/StructureDefinition/anchor-disclosure",
                "extension": [
                    {"url": "salt", "valueBase64Binary": base64.b64encode(SALT).decode()},
                    {"url": "leafIndex", "valueString": "7"},
                    {"url": "leafHash",
                     "valueBase64Binary": base64.b64encode(bytes(range(32))).decode()},
                ],
            }
        ],
        "fullUrl": "urn:uuid:x",
        "resource": procedure,
    }  # fmt: skip
    assert entry["resource"] is procedure  # the Procedure is carried untouched


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (({"resourceType": "Claim"}, SALT, 0, SALT, "u"), "only a FHIR Procedure"),
        (({"resourceType": "Procedure"}, SALT[:31], 0, SALT, "u"), "32 bytes"),
        (({"resourceType": "Procedure"}, SALT, -1, SALT, "u"), "leaf index"),
        (({"resourceType": "Procedure"}, SALT, True, SALT, "u"), "leaf index"),
        (({"resourceType": "Procedure"}, SALT, 2**63, SALT, "u"), "leaf index"),
        (({"resourceType": "Procedure"}, SALT, 0, SALT, "a b"), "fullUrl"),
    ],
)
def test_disclose_refuses(args: tuple, error: str) -> None:
    with pytest.raises(DisclosureError, match=error):
        disclosure.disclose(*args)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"who": "", "when": SIGNED_AT}, "who"),
        ({"who": WHO, "when": "yesterday"}, "instant"),
    ],
)
def test_sign_bundle_refuses_bad_signature_metadata(kwargs: dict, error: str) -> None:
    with pytest.raises(DisclosureError, match=error):
        disclosure.sign_bundle(V["unsigned_bundle"], KEY, **kwargs)


@pytest.mark.parametrize(
    ("value", "error"),
    [(Decimal("105.00"), "not JSON"), (float("nan"), "not JSON"), (2**53, "2^53")],
)
def test_sign_bundle_refuses_what_cannot_be_sent_and_verified(value: object, error: str) -> None:
    bundle = copy.deepcopy(V["unsigned_bundle"])
    bundle["entry"][0]["resource"]["total"] = {"value": value, "currency": "USD"}
    with pytest.raises(DisclosureError, match=re.escape(error)):
        disclosure.sign_bundle(bundle, KEY, who=WHO, when=SIGNED_AT)


def test_sign_bundle_replaces_an_old_signature_and_leaves_its_input_alone() -> None:
    before = copy.deepcopy(V["signed_bundle"])
    resigned = disclosure.sign_bundle(before, KEY, who=WHO, when=SIGNED_AT)
    assert resigned == V["signed_bundle"]
    assert before == V["signed_bundle"]


# --- every official Claim example, wrapped, signed, received and verified --------------------

CLAIM_EXAMPLES = sorted(EXAMPLES.glob("Claim-*.json"))
NUMBER = re.compile(r'("(?:value|factor)"\s*:\s*)(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')
PLACEHOLDER = '"__CLAIM_AS_RECEIVED__"'


def _received(claim_text: str) -> tuple[bytes, dict]:
    """Wrap an official Claim (its file text verbatim) with a disclosed Procedure; sign; send."""
    claim = json.loads(claim_text)
    procedure = _example("Procedure-example.json")
    _, leaf_hash = _anchor(procedure, SALT)
    bundle = _bundle(
        [
            {"fullUrl": CLAIM_URL, "resource": claim},
            disclosure.disclose(procedure, SALT, LEAF_INDEX, leaf_hash, PROCEDURE_URL),
        ]
    )
    signed = disclosure.sign_bundle(
        bundle, KEY, who=claim["provider"].get("reference", WHO), when=SIGNED_AT
    )
    skeleton = copy.deepcopy(signed)
    skeleton["entry"][0]["resource"] = PLACEHOLDER.strip('"')
    text = json.dumps(skeleton, indent=2).replace(PLACEHOLDER, claim_text.strip())
    return text.encode("utf-8"), signed


def test_all_official_claim_examples_are_here() -> None:
    assert len(CLAIM_EXAMPLES) == 17


@pytest.mark.parametrize("path", CLAIM_EXAMPLES, ids=lambda p: p.stem)
def test_official_claim_examples_round_trip_and_any_changed_amount_fails(path: Path) -> None:
    claim_text = path.read_text("utf-8")
    body, signed = _received(claim_text)
    assert claim_text.strip() in body.decode("utf-8")  # the numbers travel as HL7 wrote them
    bundle, _payload = disclosure.canonical_payload(body)
    assert bundle == signed
    [disclosed] = _run(body)
    assert disclosed.leaf_index == LEAF_INDEX
    assert disclosure.claim(bundle)["id"] == json.loads(claim_text)["id"]

    amounts = list(NUMBER.finditer(claim_text))
    assert amounts, f"{path.name} has no amount"
    for match in amounts:
        changed = str(Decimal(match[2]) + Decimal("0.01"))
        tampered_text = claim_text[: match.start(2)] + changed + claim_text[match.end(2) :]
        tampered = body.replace(claim_text.strip().encode(), tampered_text.strip().encode())
        assert tampered != body
        with pytest.raises(JwsError, match="does not verify"):
            _run(tampered, until="verify")


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=15,
)  # fmt: skip


@FUZZ
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_canonical_payload_raises_only_disclosure_error(body: bytes) -> None:
    try:
        bundle, payload = disclosure.canonical_payload(body)
    except DisclosureError:
        return
    # JCS writes every number as the shortest double (1.900000000000001e16 is
    # 19000000000000010): compare as doubles.
    assert json.loads(payload, parse_int=float) == {
        k: v for k, v in bundle.items() if k != "signature"
    }


@FUZZ
@given(st.dictionaries(st.text(max_size=6), JSON, max_size=5), st.integers(0, 2))
def test_the_payload_does_not_depend_on_how_the_json_is_written(obj: dict, style: int) -> None:
    indent = [None, 2, "\t"][style]
    try:
        expected = rfc8785.dumps({k: v for k, v in obj.items() if k != "signature"})
    except rfc8785.CanonicalizationError:
        return
    for text in (
        json.dumps(obj, indent=indent),
        json.dumps(obj, ensure_ascii=False, sort_keys=True),
    ):
        assert disclosure.canonical_payload(text.encode())[1] == expected


SIGNED = V.get("signed_bundle", {})
MUTATED = st.recursive(
    st.sampled_from([None, 1, "", "x", [], {}, "application/jose", disclosure.EXTENSION_URL,
                     "salt", "leafIndex", "leafHash", "Procedure", "Claim", "0", "A" * 44]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["url", "extension", "valueString", "valueBase64Binary", "resource",
                         "resourceType", "fullUrl", "data", "type"]), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


@FUZZ
@given(st.data())
def test_signature_jws_and_disclosed_procedures_raise_only_disclosure_error(data) -> None:
    bundle = copy.deepcopy(SIGNED)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(bundle)[1:]))
        parent = bundle
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = data.draw(MUTATED)
    for function in (disclosure.signature_jws, disclosure.disclosed_procedures, disclosure.claim):
        with contextlib.suppress(DisclosureError):
            function(bundle)


if __name__ == "__main__":
    VECTOR_FILE.write_text(_vector_text(build_vectors()), "utf-8")
    print(f"wrote {VECTOR_FILE}")


# --- the specification quotes the vectors, and its independent snippet works ----------------

DOC = ROOT / "docs" / "claim-format.md"


def test_the_format_document_quotes_the_vector_example() -> None:
    text = DOC.read_text("utf-8")
    assert V["body"].rstrip("\n") in text
    assert V["jws"] in text and V["protected_header"] in text
    assert V["canonical_payload_sha256"] in text
    assert disclosure.EXTENSION_URL in text and disclosure.SIGNATURE_TYPE["code"] in text


def test_the_independent_verification_snippet_in_the_document_runs() -> None:
    text = DOC.read_text("utf-8")
    snippet = text.split("In Python with nothing from this repository:\n\n```python\n")[1]
    code = snippet.split("```")[0]
    scope = {"body": V["body"].encode(), "jwk": V["public_jwk"]}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own document
    assert scope["commitment"].hex() == V["disclosure"]["commitment_hex"]
    [tampered] = [v for v in V["negative"] if v["name"] == "tampered_amount"]
    with pytest.raises(InvalidSignature):
        exec(  # noqa: S102
            compile(code, str(DOC), "exec"),
            {"body": _apply(tampered, V["body"]), "jwk": V["public_jwk"]},
        )
