"""Detached compact JWS with Ed25519 (pure: no Django). See docs/claim-format.md.

A provider signs a claim with a detached compact JWS (RFC 7515 Appendix F): ``header..signature``,
the payload travelling separately (the canonical Bundle). The only algorithm is ``EdDSA`` over
Ed25519 (RFC 8037); keys are OKP JWKs. Everything a sender controls is refused with ``JwsError``
(a ``ValueError``) and a sentence saying what is wrong, never with another exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing
import rfc8785

ALG = "EdDSA"
MAX_COMPACT_CHARS = 2048  # a header with a 128-character kid is ~100 characters, a signature 86
KID_MAX_CHARS = 128
# A key id: printable ASCII without space, quote or backslash (so it needs no JSON escape).
_KID = re.compile(rf"[!#-\[\]-~]{{1,{KID_MAX_CHARS}}}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 7638 section 3.2 (and RFC 8037 section 2 for OKP): the members a thumbprint covers.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}


class JwsError(ValueError):
    """The JWS or JWK is malformed, unsupported, or the signature does not verify."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A validated Ed25519 public key (32 raw bytes) and the ``kid`` its JWK named, if any."""

    raw: bytes
    kid: str | None = None

    @property
    def x(self) -> str:
        return b64url(self.raw)


@dataclass(frozen=True, slots=True)
class Detached:
    """A parsed detached JWS: what verification needs, nothing else."""

    header: dict[str, Any]
    kid: str
    signing_header_b64: str  # BASE64URL(header) exactly as received: the signing input's prefix
    signature: bytes


def b64url(data: bytes) -> str:
    """BASE64URL without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: object, what: str) -> bytes:
    # Canonical only: no padding, no other alphabet, no stray bits in the last character, so one
    # signature has one encoding (no malleability of the compact form).
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise JwsError(f"{what} must be base64url without padding (RFC 7515 section 2)")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if b64url(raw) != value:
        raise JwsError(f"{what} is not canonical base64url (stray bits in its last character)")
    return raw


def check_kid(kid: object) -> str:
    """A key id as ClaimProof takes it: 1-128 printable ASCII characters, no space, '"' or '\\'."""
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise JwsError(
            f"kid must be 1 to {KID_MAX_CHARS} printable ASCII characters without space, "
            "quote or backslash"
        )
    return kid


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the default ``kid`` of a provider key."""
    if not isinstance(jwk, dict):
        raise JwsError("a JWK is a JSON object")
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise JwsError("a JWK thumbprint needs kty EC, OKP, RSA or oct")
    required = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise JwsError(f"a {kty} JWK needs the string member {name!r}")
        required[name] = value
    try:
        return b64url(hashlib.sha256(rfc8785.dumps(required)).digest())
    except rfc8785.CanonicalizationError as exc:
        raise JwsError(f"the JWK cannot be canonicalised: {exc}") from exc


def generate_key() -> tuple[dict[str, str], dict[str, str]]:
    """A new Ed25519 key pair as (private JWK, public JWK), ``kid`` = the RFC 7638 thumbprint."""
    signing_key = nacl.signing.SigningKey.generate()
    public = {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(signing_key.verify_key))}
    kid = thumbprint(public)
    return {**public, "d": b64url(bytes(signing_key)), "kid": kid}, {**public, "kid": kid}


def _show(value: object) -> str:
    """A sender's value, quoted in an error only when it is a short string."""
    return repr(value) if isinstance(value, str) and len(value) <= 40 else type(value).__name__


def _okp_ed25519(jwk: object, what: str) -> dict[str, Any]:
    if not isinstance(jwk, dict):
        raise JwsError(f"{what} must be a JWK (a JSON object)")
    if jwk.get("kty") != "OKP":
        raise JwsError(f"{what} must have kty OKP (RFC 8037), not {_show(jwk.get('kty'))}")
    if jwk.get("crv") != "Ed25519":
        raise JwsError(f"{what} must have crv Ed25519, not {_show(jwk.get('crv'))}")
    if "alg" in jwk and jwk["alg"] != ALG:
        raise JwsError(f"{what} is restricted to alg {_show(jwk['alg'])}, not {ALG}")
    if "use" in jwk and jwk["use"] != "sig":
        raise JwsError(f"{what} has use {_show(jwk['use'])}; a signing key has use 'sig'")
    if "kid" in jwk:
        check_kid(jwk["kid"])
    return jwk


def public_jwk_parse(jwk: dict[str, Any]) -> PublicKey:
    """Validate a provider's public JWK: OKP, Ed25519, a 32-byte ``x`` that is a valid point."""
    _okp_ed25519(jwk, "the public key")
    if "d" in jwk:
        raise JwsError(
            "this JWK holds a private key ('d'): only the public key may be sent or stored"
        )
    return _public_key(jwk.get("x"), jwk.get("kid"))


@lru_cache(maxsize=4096)
def _public_key_cached(x: str, kid: str | None) -> PublicKey:
    raw = _b64url_decode(x, "x")
    if len(raw) != nacl.bindings.crypto_sign_PUBLICKEYBYTES:
        raise JwsError(f"x must be a 32-byte Ed25519 public key, got {len(raw)} bytes")
    # Canonical encoding of a point of prime order: refuses small-order (weak) keys up front.
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise JwsError("x is not a valid Ed25519 public key (not a point of prime order)")
    return PublicKey(raw, kid)


def _public_key(x: object, kid: object) -> PublicKey:
    if not isinstance(x, str) or len(x) > 64:
        raise JwsError("x must be the base64url 32-byte Ed25519 public key")
    return _public_key_cached(x, kid)  # type: ignore[arg-type]


@lru_cache(maxsize=256)
def _signing_key_cached(d: str, x: str) -> nacl.signing.SigningKey:
    seed = _b64url_decode(d, "d")
    if len(seed) != nacl.bindings.crypto_sign_SEEDBYTES:
        raise JwsError(f"d must be a 32-byte Ed25519 private key, got {len(seed)} bytes")
    key = nacl.signing.SigningKey(seed)
    if b64url(bytes(key.verify_key)) != x:
        raise JwsError("the private JWK's x is not the public key of its d")
    return key


def _signing_key(private_jwk: dict[str, Any]) -> nacl.signing.SigningKey:
    _okp_ed25519(private_jwk, "the private key")
    d, x = private_jwk.get("d"), private_jwk.get("x")
    if not isinstance(d, str) or not isinstance(x, str) or len(d) > 64 or len(x) > 64:
        raise JwsError("a private Ed25519 JWK needs the base64url members d and x")
    return _signing_key_cached(d, x)


def sign_detached(payload: bytes, private_jwk: dict[str, Any], kid: str | None = None) -> str:
    """Sign ``payload`` as ``BASE64URL(header)..BASE64URL(signature)``.

    The header is exactly the RFC 8785 form of ``{"alg":"EdDSA","kid":kid}``; ``kid`` defaults to
    the JWK's own ``kid``, else its RFC 7638 thumbprint.
    """
    key = _signing_key(private_jwk)
    if kid is None:
        kid = private_jwk.get("kid") or thumbprint(private_jwk)
    header = b64url(rfc8785.dumps({"alg": ALG, "kid": check_kid(kid)}))
    signature = key.sign(f"{header}.{b64url(payload)}".encode("ascii")).signature
    return f"{header}..{b64url(signature)}"


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise JwsError("the protected header repeats a member name")
    return out


def parse_detached(compact: str | bytes) -> Detached:
    """Parse a detached compact JWS, refusing anything but ``EdDSA`` with a ``kid``."""
    if isinstance(compact, bytes | bytearray):
        try:
            compact = bytes(compact).decode("ascii")
        except UnicodeDecodeError:
            raise JwsError("a compact JWS is ASCII") from None
    if not isinstance(compact, str):
        raise JwsError("a compact JWS is a string")
    dots = compact.count(".")
    if dots != 2:
        raise JwsError(
            "a compact JWS is three base64url parts separated by two dots "
            f"(header..signature when detached); this one has {dots + 1} part(s)"
        )
    header_b64, payload_b64, signature_b64 = compact.split(".")
    if payload_b64:
        raise JwsError(
            "the JWS carries a payload: ClaimProof signatures are detached (RFC 7515 Appendix F), "
            "header..signature with an empty middle part"
        )
    if len(compact) > MAX_COMPACT_CHARS:
        raise JwsError(f"the JWS is longer than {MAX_COMPACT_CHARS} characters")
    header_bytes = _b64url_decode(header_b64, "the protected header")
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_unique_members)
    except JwsError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JwsError("the protected header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise JwsError("the protected header is not a JSON object")
    alg = header.get("alg")
    if alg == "none":
        raise JwsError("alg none (an unsecured JWS) is refused: the header must say alg EdDSA")
    if alg != ALG:
        raise JwsError(f"the header must say alg EdDSA (RFC 8037), not {_show(alg)}")
    if "b64" in header:
        raise JwsError("the header has b64: unencoded payloads (RFC 7797) are not supported")
    if "crit" in header:
        raise JwsError("the header has crit: ClaimProof understands no JWS extension")
    if "kid" not in header:
        raise JwsError("the header has no kid: the provider's key is found by its kid")
    kid = check_kid(header["kid"])
    signature = _b64url_decode(signature_b64, "the signature")
    if len(signature) != nacl.bindings.crypto_sign_BYTES:
        raise JwsError(f"an Ed25519 signature is 64 bytes, this one is {len(signature)}")
    return Detached(header, kid, header_b64, signature)


def _verify_raw(public_key: PublicKey, message: bytes, signature: bytes) -> None:
    """Ed25519 verification through the fastest binding (libsodium's crypto_sign_open)."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key.raw)
    except (nacl.exceptions.CryptoError, ValueError, TypeError, binascii.Error) as exc:
        raise JwsError("the signature does not verify under the provider's key") from exc


def verify_detached(detached: Detached, payload: bytes, public_key: PublicKey) -> None:
    """Check the signature over ``payload`` (the canonical Bundle bytes); raise ``JwsError``."""
    if public_key.kid is not None and public_key.kid != detached.kid:
        raise JwsError(f"the JWS names key {detached.kid!r}, not this key {public_key.kid!r}")
    message = b"%s.%s" % (
        detached.signing_header_b64.encode("ascii"),
        base64.urlsafe_b64encode(payload).rstrip(b"="),
    )
    _verify_raw(public_key, message, detached.signature)
