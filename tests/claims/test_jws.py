"""claims/jws.py against published vectors (RFC 8032, RFC 8037, RFC 7638) and under fuzzing.

Every published value is also checked with a second Ed25519 implementation (``cryptography``), so
that the vectors, not merely our binding, say what verification means.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claims import jws
from claims.jws import Detached, JwsError

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
RFC8032 = json.loads((VECTORS / "rfc8032_ed25519.json").read_text("utf-8"))
RFC8037 = json.loads((VECTORS / "rfc8037_jose_ed25519.json").read_text("utf-8"))
RFC7638 = json.loads((VECTORS / "rfc7638_thumbprint.json").read_text("utf-8"))
KEY = RFC8037["private_jwk"]
KID = RFC8037["thumbprint"]


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _okp(public: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url(public)}


def test_the_vector_files_cite_their_sources() -> None:
    for vectors in (RFC8032, RFC8037, RFC7638):
        assert vectors["source"].startswith("RFC ")
        assert "https://www.rfc-editor.org/rfc/" in vectors["source"]
    assert "PUBLISHED TEST KEY" in RFC8037["test_key_warning"]


# --- RFC 8032 section 7.1 through the binding verify_detached uses ---------------------------


@pytest.mark.parametrize("vector", RFC8032["vectors"], ids=lambda v: v["name"])
def test_rfc8032_ed25519_vectors_through_our_binding(vector: dict) -> None:
    seed, public = bytes.fromhex(vector["secret_key"]), bytes.fromhex(vector["public_key"])
    message, signature = bytes.fromhex(vector["message"]), bytes.fromhex(vector["signature"])
    if "message_note" in vector:
        assert message == hashlib.sha512(b"abc").digest()

    signing_key = nacl.signing.SigningKey(seed)
    assert bytes(signing_key.verify_key) == public
    assert signing_key.sign(message).signature == signature

    private_jwk = {**_okp(public), "d": jws.b64url(seed)}
    assert jws._signing_key(private_jwk).sign(message).signature == signature
    key = jws.public_jwk_parse(_okp(public))
    assert key.raw == public
    jws._verify_raw(key, message, signature)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)  # second opinion

    for bit in (0, 7, 255, 511):
        bad = bytearray(signature)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(JwsError, match="does not verify"):
            jws._verify_raw(key, message, bytes(bad))
    with pytest.raises(JwsError, match="does not verify"):
        jws._verify_raw(key, message + b"\x00", signature)


# --- RFC 8037 Appendix A --------------------------------------------------------------------


def test_rfc8037_a1_a2_private_and_public_key() -> None:
    assert _b64url_decode(KEY["d"]).hex() == RFC8037["private_key_hex"]
    assert _b64url_decode(KEY["x"]).hex() == RFC8037["public_key_hex"]
    assert RFC8037["private_key_hex"] == RFC8032["vectors"][0]["secret_key"]  # TEST 1's key
    assert bytes(jws._signing_key(KEY).verify_key).hex() == RFC8037["public_key_hex"]
    key = jws.public_jwk_parse(RFC8037["public_jwk"])
    assert key.raw.hex() == RFC8037["public_key_hex"]
    assert key.x == RFC8037["public_jwk"]["x"]
    assert key.kid is None


def test_rfc8037_a3_thumbprint() -> None:
    assert rfc8785.dumps({k: RFC8037["public_jwk"][k] for k in ("crv", "kty", "x")}) == RFC8037[
        "thumbprint_input"
    ].encode("utf-8")
    assert jws.thumbprint(RFC8037["public_jwk"]) == RFC8037["thumbprint"]
    assert jws.thumbprint(KEY) == RFC8037["thumbprint"]  # d is not part of it
    assert jws.thumbprint({**RFC8037["public_jwk"], "kid": "x", "use": "sig"}) == KID


def test_rfc8037_a4_signing_reproduces_the_published_signature() -> None:
    header_b64, payload_b64, signature_b64 = RFC8037["jws"].split(".")
    assert _b64url_decode(header_b64) == RFC8037["protected_header"].encode()
    assert _b64url_decode(payload_b64) == RFC8037["payload"].encode()
    assert f"{header_b64}.{jws.b64url(RFC8037['payload'].encode())}" == RFC8037["signing_input"]
    signature = jws._signing_key(KEY).sign(RFC8037["signing_input"].encode()).signature
    assert jws.b64url(signature) == signature_b64


def test_rfc8037_a5_the_jws_and_its_detached_form_verify() -> None:
    header_b64, _, signature_b64 = RFC8037["jws"].split(".")
    assert RFC8037["detached_jws"] == f"{header_b64}..{signature_b64}"
    public = jws.public_jwk_parse(RFC8037["public_jwk"])
    # Our verification of the detached form: the payload supplied separately.
    detached = Detached({"alg": "EdDSA"}, "", header_b64, _b64url_decode(signature_b64))
    jws.verify_detached(detached, RFC8037["payload"].encode(), public)
    with pytest.raises(JwsError, match="does not verify"):
        jws.verify_detached(detached, b"Example of Ed25519 signinG", public)
    # A second implementation agrees on the signing input.
    Ed25519PublicKey.from_public_bytes(public.raw).verify(
        _b64url_decode(signature_b64), RFC8037["signing_input"].encode()
    )
    # Our parser takes only detached JWS with a kid: the published forms are refused, clearly.
    with pytest.raises(JwsError, match="detached"):
        jws.parse_detached(RFC8037["jws"])
    with pytest.raises(JwsError, match="no kid"):
        jws.parse_detached(RFC8037["detached_jws"])


def test_rfc7638_section_3_1_thumbprint_of_an_rsa_key() -> None:
    assert jws.thumbprint(RFC7638["jwk"]) == RFC7638["thumbprint"]


# --- our format ----------------------------------------------------------------------------


def test_sign_detached_writes_exactly_the_canonical_header_and_an_empty_payload_part() -> None:
    payload = b'{"resourceType":"Bundle"}'
    compact = jws.sign_detached(payload, KEY, KID)
    header_b64, middle, signature_b64 = compact.split(".")
    assert middle == ""
    assert _b64url_decode(header_b64) == b'{"alg":"EdDSA","kid":"%s"}' % KID.encode()
    # Deterministic (RFC 8032): the same key, kid and payload always give the same JWS.
    assert compact == jws.sign_detached(payload, KEY, KID)
    detached = jws.parse_detached(compact)
    assert detached == Detached({"alg": "EdDSA", "kid": KID}, KID, header_b64, detached.signature)
    jws.verify_detached(detached, payload, jws.public_jwk_parse(RFC8037["public_jwk"]))
    # Independently: the signing input is BASE64URL(header) '.' BASE64URL(payload).
    Ed25519PublicKey.from_public_bytes(_b64url_decode(KEY["x"])).verify(
        _b64url_decode(signature_b64),
        f"{header_b64}.{jws.b64url(payload)}".encode(),
    )


def test_kid_defaults_to_the_jwk_kid_then_to_the_thumbprint() -> None:
    assert jws.parse_detached(jws.sign_detached(b"x", KEY)).kid == KID
    assert jws.parse_detached(jws.sign_detached(b"x", {**KEY, "kid": "k-2025"})).kid == "k-2025"
    assert jws.parse_detached(jws.sign_detached(b"x", KEY, "other")).kid == "other"


def test_generate_key_gives_a_working_pair_with_the_thumbprint_as_kid() -> None:
    private, public = jws.generate_key()
    assert set(private) == {"kty", "crv", "x", "d", "kid"}
    assert set(public) == {"kty", "crv", "x", "kid"}
    assert public == {k: v for k, v in private.items() if k != "d"}
    assert public["kid"] == jws.thumbprint(public)
    key = jws.public_jwk_parse(public)
    jws.verify_detached(jws.parse_detached(jws.sign_detached(b"p", private)), b"p", key)
    assert jws.generate_key()[1]["x"] != public["x"]


def test_parsed_public_keys_are_cached() -> None:
    assert jws.public_jwk_parse(dict(RFC8037["public_jwk"])) is jws.public_jwk_parse(
        dict(RFC8037["public_jwk"])
    )


def test_verify_refuses_another_key_and_a_kid_mismatch() -> None:
    detached = jws.parse_detached(jws.sign_detached(b"payload", KEY))
    _, other = jws.generate_key()
    with pytest.raises(JwsError, match="does not verify"):
        jws.verify_detached(detached, b"payload", jws.public_jwk_parse({**other, "kid": KID}))
    with pytest.raises(JwsError, match="names key"):
        jws.verify_detached(
            detached, b"payload", jws.public_jwk_parse({**RFC8037["public_jwk"], "kid": "else"})
        )


IDENTITY_POINT = b"\x01" + bytes(31)


@pytest.mark.parametrize(
    ("jwk", "error"),
    [
        ([], "JSON object"),
        ({**RFC8037["public_jwk"], "d": KEY["d"]}, "private key"),
        ({**RFC8037["public_jwk"], "kty": "EC"}, "kty OKP"),
        ({**RFC8037["public_jwk"], "crv": "X25519"}, "crv Ed25519"),
        ({**RFC8037["public_jwk"], "crv": "Ed448"}, "crv Ed25519"),
        ({"kty": "OKP", "crv": "Ed25519"}, "x must be"),
        ({**RFC8037["public_jwk"], "x": RFC8037["public_jwk"]["x"][:-1]}, "base64url"),
        ({**RFC8037["public_jwk"], "x": RFC8037["public_jwk"]["x"] + "="}, "base64url"),
        ({**RFC8037["public_jwk"], "x": jws.b64url(bytes(31))}, "32-byte"),
        ({**RFC8037["public_jwk"], "x": jws.b64url(IDENTITY_POINT)}, "not a valid Ed25519"),
        ({**RFC8037["public_jwk"], "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURp"}, "stray"),
        ({**RFC8037["public_jwk"], "alg": "ES256"}, "restricted to alg"),
        ({**RFC8037["public_jwk"], "use": "enc"}, "use"),
        ({**RFC8037["public_jwk"], "kid": ""}, "kid must be"),
        ({**RFC8037["public_jwk"], "kid": "a b"}, "kid must be"),
        ({**RFC8037["public_jwk"], "kid": 7}, "kid must be"),
    ],
)
def test_public_jwk_parse_refuses(jwk: object, error: str) -> None:
    with pytest.raises(JwsError, match=error):
        jws.public_jwk_parse(jwk)  # type: ignore[arg-type]


def _compact(header: object, signature: bytes = bytes(64), payload: str = "") -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return f"{jws.b64url(raw)}.{payload}.{jws.b64url(signature)}"


GOOD = {"alg": "EdDSA", "kid": KID}


@pytest.mark.parametrize(
    ("compact", "error"),
    [
        (RFC8037["jws"], "detached"),
        (_compact(GOOD, payload="e30"), "detached"),
        (_compact({"alg": "none", "kid": KID}, b""), "alg none"),
        (_compact({"alg": "HS256", "kid": KID}, bytes(32)), "alg EdDSA"),
        (_compact({"alg": "Ed25519", "kid": KID}), "alg EdDSA"),
        (_compact({"alg": "eddsa", "kid": KID}), "alg EdDSA"),
        (_compact({"kid": KID}), "alg EdDSA"),
        (_compact({**GOOD, "crit": ["exp"], "exp": 1}), "crit"),
        (_compact({**GOOD, "b64": False, "crit": ["b64"]}), "b64"),
        (_compact({**GOOD, "b64": True}), "b64"),
        (_compact({"alg": "EdDSA"}), "no kid"),
        (_compact({"alg": "EdDSA", "kid": ""}), "kid must be"),
        (_compact({"alg": "EdDSA", "kid": 12}), "kid must be"),
        (_compact({"alg": "EdDSA", "kid": "x" * 129}), "kid must be"),
        (_compact(b'{"alg":"EdDSA","kid":"a","kid":"b"}'), "repeats"),
        (_compact(b"not json"), "not UTF-8 JSON"),
        (_compact(b'{"alg":"EdDSA","kid":"\xff"}'), "not UTF-8 JSON"),
        (_compact(b'["EdDSA"]'), "not a JSON object"),
        (_compact(b"[" * 1000), "not UTF-8 JSON"),
        (_compact(GOOD, bytes(63)), "64 bytes"),
        (_compact(GOOD, bytes(65)), "65"),
        (_compact(GOOD).replace("..", "..+"), "base64url"),
        (_compact(GOOD) + "=", "base64url"),
        (_compact(GOOD)[:-1] + "B", "stray bits"),
        ("=" + _compact(GOOD), "base64url"),
        (".." + jws.b64url(bytes(64)), "base64url|protected header"),
        (_compact(GOOD).replace("..", "."), "three base64url parts"),
        (_compact(GOOD) + ".", "three base64url parts"),
        ("", "three base64url parts"),
        ("a" * 3000 + "..a", "longer than"),
        ("é..é", "base64url"),
    ],
)
def test_parse_detached_refuses(compact: str, error: str) -> None:
    with pytest.raises(JwsError, match=error):
        jws.parse_detached(compact)


@pytest.mark.parametrize("value", [None, 12, b"\xff..\xff", ["a..b"], {"a": 1}])
def test_parse_detached_refuses_things_that_are_not_strings(value: object) -> None:
    with pytest.raises(JwsError):
        jws.parse_detached(value)  # type: ignore[arg-type]


def test_parse_detached_takes_ascii_bytes() -> None:
    compact = jws.sign_detached(b"p", KEY)
    assert jws.parse_detached(compact.encode()) == jws.parse_detached(compact)


def test_unknown_header_members_are_ignored_and_keys_in_the_header_are_not_trusted() -> None:
    # RFC 7515 section 4: unknown members are ignored (crit aside); a jwk in the header is never
    # used: the key comes from the provider's registry by kid.
    _, attacker = jws.generate_key()
    header = {**GOOD, "typ": "JOSE", "jwk": attacker}
    detached = jws.parse_detached(_compact(header))
    assert detached.kid == KID
    with pytest.raises(JwsError, match="does not verify"):
        jws.verify_detached(detached, b"", jws.public_jwk_parse(RFC8037["public_jwk"]))


def test_the_alg_confusion_attack_hs256_keyed_with_the_public_key_is_refused() -> None:
    header = jws.b64url(json.dumps({"alg": "HS256", "kid": KID}).encode())
    mac = hmac.new(_b64url_decode(KEY["x"]), f"{header}.{jws.b64url(b'p')}".encode(), "sha256")
    with pytest.raises(JwsError, match="alg EdDSA"):
        jws.parse_detached(f"{header}..{jws.b64url(mac.digest())}")


def test_the_pure_module_imports_without_django() -> None:
    code = "import sys, claims.jws, claims.disclosure; sys.exit('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (
        result.stderr or "claims.jws or claims.disclosure imported django"
    )


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
B64URL_CHARS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/", max_size=120
)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), B64URL_CHARS))
def test_parse_detached_raises_only_jws_error_on_arbitrary_input(value: str | bytes) -> None:
    with contextlib.suppress(JwsError):
        jws.parse_detached(value)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64", "typ"]) | st.text(max_size=5),
                    JSON_VALUES | st.sampled_from(["EdDSA", KID, "none"]), max_size=5),
    st.binary(max_size=80),
    st.text(alphabet="ab-_", max_size=3),
)  # fmt: skip
def test_parse_detached_on_structured_headers_raises_only_jws_error(
    header: dict, signature: bytes, middle: str
) -> None:
    try:
        detached = jws.parse_detached(_compact(header, signature, middle))
    except JwsError:
        return
    assert detached.header["alg"] == "EdDSA" and len(detached.signature) == 64 and not middle


@FUZZ
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=6),
        st.fixed_dictionaries(
            {"kty": st.just("OKP"), "crv": st.just("Ed25519")},
            optional={
                "x": st.binary(min_size=30, max_size=33).map(jws.b64url) | JSON_VALUES,
                "kid": st.text(max_size=130) | JSON_VALUES,
                "alg": st.sampled_from(["EdDSA", "none"]) | JSON_VALUES,
                "use": st.sampled_from(["sig", "enc"]),
                "d": JSON_VALUES,
            },
        ),
        JSON_VALUES,
    )
)
def test_public_jwk_parse_raises_only_jws_error_on_arbitrary_dicts(jwk: object) -> None:
    try:
        key = jws.public_jwk_parse(jwk)  # type: ignore[arg-type]
    except JwsError:
        return
    assert len(key.raw) == 32 and "d" not in jwk  # type: ignore[operator]


@settings(FUZZ, max_examples=100)
@given(
    st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "e", "n", "k"]), JSON_VALUES)
    | st.fixed_dictionaries({"kty": st.sampled_from(["EC", "OKP", "RSA", "oct", "x"])}),
)
def test_thumbprint_raises_only_jws_error(jwk: dict) -> None:
    with contextlib.suppress(JwsError):
        jws.thumbprint(jwk)


PRIVATE, PUBLIC = jws.generate_key()
PUBLIC_KEY = jws.public_jwk_parse(PUBLIC)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@FUZZ
@given(st.binary(max_size=2000), st.data())
def test_sign_verify_roundtrip_and_any_flipped_bit_fails(payload: bytes, data) -> None:
    compact = jws.sign_detached(payload, PRIVATE)
    detached = jws.parse_detached(compact)
    jws.verify_detached(detached, payload, PUBLIC_KEY)
    Ed25519PublicKey.from_public_bytes(PUBLIC_KEY.raw).verify(
        detached.signature, f"{detached.signing_header_b64}.{jws.b64url(payload)}".encode()
    )

    if payload:
        bit = data.draw(st.integers(0, len(payload) * 8 - 1), label="payload bit")
        with pytest.raises(JwsError):
            jws.verify_detached(detached, _flip(payload, bit), PUBLIC_KEY)
    with pytest.raises(JwsError):
        jws.verify_detached(detached, payload + b"\x00", PUBLIC_KEY)

    bit = data.draw(st.integers(0, 511), label="signature bit")
    bad_signature = jws.b64url(_flip(detached.signature, bit))
    with pytest.raises(JwsError):
        jws.verify_detached(
            jws.parse_detached(f"{detached.signing_header_b64}..{bad_signature}"),
            payload,
            PUBLIC_KEY,
        )

    header = _b64url_decode(detached.signing_header_b64)
    bit = data.draw(st.integers(0, len(header) * 8 - 1), label="header bit")
    tampered = f"{jws.b64url(_flip(header, bit))}..{jws.b64url(detached.signature)}"
    with pytest.raises(JwsError):
        jws.verify_detached(jws.parse_detached(tampered), payload, PUBLIC_KEY)

    char = data.draw(st.integers(0, len(compact) - 1), label="compact character")
    bit = data.draw(st.integers(0, 6), label="character bit")
    mangled = compact[:char] + chr(ord(compact[char]) ^ (1 << bit)) + compact[char + 1 :]
    with pytest.raises(JwsError):
        jws.verify_detached(jws.parse_detached(mangled), payload, PUBLIC_KEY)


def test_a_signature_does_not_verify_with_cryptography_for_another_payload() -> None:
    detached = jws.parse_detached(jws.sign_detached(b"a", PRIVATE))
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(PUBLIC_KEY.raw).verify(
            detached.signature, f"{detached.signing_header_b64}.{jws.b64url(b'b')}".encode()
        )
