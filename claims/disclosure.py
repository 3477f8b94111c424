"""The claim submission format (pure: no Django, no fhir.resources). See docs/claim-format.md.

A submission is a FHIR R4 ``Bundle`` (type ``collection``) with one ``Claim`` and the
``Procedure`` resources it bills. Each Procedure entry discloses its anchor (salt, leaf index,
leaf hash) in ``Bundle.entry[i].extension``, outside the Procedure, which must stay exactly what
was committed. ``Bundle.signature.data`` is base64 of a detached compact JWS over the RFC 8785
canonical JSON of the Bundle without ``signature``, computed from the bytes received: never from a
re-serialised FHIR model, which loses decimal precision.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

from claims import jws
from ledger import anchor, jcs

EXTENSION_URL = "https://claimproof.example/fhir/StructureDefinition/anchor-disclosure"
SIG_FORMAT = "application/jose"
SIGNATURE_TYPE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.1",
    "display": "Author's Signature",
}
SALT_BYTES = anchor.SALT_BYTES
LEAF_HASH_BYTES = 32
MAX_LEAF_INDEX = 2**63 - 1  # a PostgreSQL bigint; R4 integer (32-bit) is too small, so a string
MAX_DEPTH = 64  # real FHIR claims nest about 20 deep; deeper JSON is a bomb, refused before JCS

_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# Two dots and base64url: the JWS parser then says precisely what is wrong with it.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_LEAF_INDEX = re.compile(r"0|[1-9][0-9]{0,18}")
_FULL_URL = re.compile(r"[!-~]{1,1024}")  # an absolute URI or urn:uuid:, no spaces
# FHIR R4 instant (http://hl7.org/fhir/R4/datatypes.html#instant).
_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_SUB_EXTENSIONS = {"salt": "valueBase64Binary", "leafIndex": "valueString",
                   "leafHash": "valueBase64Binary"}  # fmt: skip


# Resources a claim Bundle may carry besides the Claim and its Procedures: context for the
# verifier (coverage at the date of service, patient consistency), never billed or disclosed.
CONTEXT_RESOURCES = frozenset({"Coverage", "Patient", "Organization", "Practitioner"})


class DisclosureError(ValueError):
    """The submission is not a well-formed signed claim Bundle with valid disclosures."""


class NotJson(DisclosureError):
    """The body is not UTF-8 JSON at all (an HTTP 400, where other refusals are 422)."""


@dataclass(frozen=True, slots=True)
class Disclosed:
    """One billed Procedure with its disclosed anchor and the commitment it must match."""

    entry: int  # position in Bundle.entry
    full_url: str
    procedure: dict[str, Any]
    salt: bytes
    leaf_index: int
    leaf_hash: bytes
    commitment: bytes  # SHA-256(salt || JCS(procedure)): must equal the anchor's commitment


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 40 else type(value).__name__


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        names = [k for k, _ in pairs]
        dup = next(k for k in out if names.count(k) > 1)
        raise DisclosureError(f"the JSON repeats the member {_show(dup)} in one object")
    return out


def _no_constant(name: str) -> None:
    raise DisclosureError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _check_depth(value: object) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DisclosureError(f"the JSON nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


def _jcs(value: object) -> bytes:
    try:
        return jcs.canonical(value)
    except rfc8785.IntegerDomainError as exc:
        raise DisclosureError(
            f"an integer beyond +/-(2^53-1) cannot be signed: RFC 8785 numbers are IEEE doubles "
            f"({exc})"
        ) from exc
    except rfc8785.FloatDomainError as exc:
        raise DisclosureError(f"a number cannot be canonicalised (RFC 8785): {exc}") from exc
    except rfc8785.CanonicalizationError as exc:
        raise DisclosureError(f"the JSON cannot be canonicalised (RFC 8785): {exc}") from exc
    except RecursionError:
        raise DisclosureError(f"the JSON nests deeper than {MAX_DEPTH} levels") from None


def canonical_payload(body: bytes) -> tuple[dict[str, Any], bytes]:
    """Parse the received bytes; return (the JSON object, JCS of it without ``signature``).

    The second value is what the provider signed; store it at intake so that verification never
    canonicalises again.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DisclosureError("the body must be bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise NotJson("the body is not UTF-8") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except DisclosureError:
        raise
    except RecursionError:
        raise DisclosureError(f"the JSON nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise NotJson(f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DisclosureError("the body must be a JSON object (a FHIR Bundle)")
    _check_depth(obj)
    return obj, _jcs({k: v for k, v in obj.items() if k != "signature"})


def signature_jws(bundle: dict[str, Any]) -> str:
    """The compact detached JWS in ``Bundle.signature.data`` (after checking the Signature)."""
    sig = bundle.get("signature")
    if sig is None:
        raise DisclosureError(
            "the Bundle has no signature: Bundle.signature must carry the provider's JWS"
        )
    if not isinstance(sig, dict):
        raise DisclosureError("Bundle.signature must be a FHIR Signature (a JSON object)")
    if sig.get("sigFormat") != SIG_FORMAT:
        raise DisclosureError(
            f"Bundle.signature.sigFormat must be {SIG_FORMAT}, not {_show(sig.get('sigFormat'))}"
        )
    types = sig.get("type")
    if not isinstance(types, list) or not any(
        isinstance(t, dict)
        and t.get("system") == SIGNATURE_TYPE["system"]
        and t.get("code") == SIGNATURE_TYPE["code"]
        for t in types
    ):
        raise DisclosureError(
            f"Bundle.signature.type must include {SIGNATURE_TYPE['system']}#"
            f"{SIGNATURE_TYPE['code']} (Author's Signature)"
        )
    when = sig.get("when")
    if not isinstance(when, str) or not _INSTANT.fullmatch(when):
        raise DisclosureError(
            "Bundle.signature.when must be a FHIR instant such as 2025-03-14T15:09:26Z"
        )
    who = sig.get("who")
    if not isinstance(who, dict) or not isinstance(who.get("reference"), str):
        raise DisclosureError("Bundle.signature.who must be a reference to the provider")
    data = sig.get("data")
    if not isinstance(data, str) or not data:
        raise DisclosureError("Bundle.signature.data must hold base64 of the compact JWS")
    if "." in data:
        raise DisclosureError("Signature.data must be base64 of the JWS, not the JWS itself")
    if "-" in data or "_" in data:
        raise DisclosureError(
            "Signature.data must be standard base64 of the JWS ('+' and '/', as FHIR "
            "base64Binary), not base64url"
        )
    if not _B64.fullmatch(data):
        raise DisclosureError(
            "Signature.data must be standard base64 with '=' padding and no whitespace"
        )
    raw = binascii.a2b_base64(data)
    if base64.b64encode(raw).decode("ascii") != data:
        raise DisclosureError("Signature.data is not canonical base64 (stray bits)")
    try:
        compact = raw.decode("ascii")
    except UnicodeDecodeError:
        compact = ""
    if not _COMPACT_JWS.fullmatch(compact):
        raise DisclosureError("Signature.data does not decode to an ASCII compact JWS")
    return compact


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise DisclosureError("a claim submission is a FHIR Bundle")
    if bundle.get("type") != "collection":
        raise DisclosureError(
            f"the Bundle type must be collection, not {_show(bundle.get('type'))}"
        )
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DisclosureError("Bundle.entry must be a list of entries")
    return entries


def _resource_type(entry: dict[str, Any], i: int) -> str:
    resource = entry.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise DisclosureError(f"Bundle.entry[{i}] has no resource with a resourceType")
    return resource["resourceType"]


def claim(bundle: dict[str, Any]) -> dict[str, Any]:
    """The one ``Claim`` resource of a claim Bundle."""
    claims = [e["resource"] for i, e in enumerate(_entries(bundle))
              if _resource_type(e, i) == "Claim"]  # fmt: skip
    if len(claims) != 1:
        raise DisclosureError(f"the Bundle must hold exactly one Claim, not {len(claims)}")
    return claims[0]


def _b64_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str) or not _B64.fullmatch(value):
        raise DisclosureError(f"{what} must be standard base64 (FHIR base64Binary)")
    raw = binascii.a2b_base64(value)
    if len(raw) != size or base64.b64encode(raw).decode("ascii") != value:
        raise DisclosureError(f"{what} must be {size} bytes in canonical base64")
    return raw


def _disclosure(entry: dict[str, Any], i: int) -> dict[str, Any] | None:
    extensions = entry.get("extension", [])
    if not isinstance(extensions, list):
        raise DisclosureError(f"Bundle.entry[{i}].extension must be a list")
    found = [x for x in extensions if isinstance(x, dict) and x.get("url") == EXTENSION_URL]
    if len(found) > 1:
        raise DisclosureError(f"Bundle.entry[{i}] has {len(found)} anchor disclosures, not one")
    return found[0] if found else None


def _parse_disclosure(ext: dict[str, Any], i: int) -> tuple[bytes, int, bytes]:
    where = f"Bundle.entry[{i}] anchor disclosure"
    if any(isinstance(k, str) and k.startswith("value") for k in ext):
        raise DisclosureError(f"{where} is a complex extension: it has no value[x]")
    subs = ext.get("extension")
    if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
        raise DisclosureError(f"{where} must hold the sub-extensions salt, leafIndex, leafHash")
    urls = [s.get("url") for s in subs]
    if sorted(map(str, urls)) != sorted(_SUB_EXTENSIONS):
        raise DisclosureError(
            f"{where} must hold exactly the sub-extensions salt, leafIndex and leafHash, once each"
        )
    values = {}
    for sub in subs:
        name, kind = sub["url"], _SUB_EXTENSIONS[sub["url"]]
        others = [k for k in sub if isinstance(k, str) and k.startswith("value") and k != kind]
        if others or kind not in sub:
            raise DisclosureError(f"{where}: {name} must be a {kind}")
        values[name] = sub[kind]
    salt = _b64_bytes(values["salt"], SALT_BYTES, f"{where}: salt")
    leaf_hash = _b64_bytes(values["leafHash"], LEAF_HASH_BYTES, f"{where}: leafHash")
    index = values["leafIndex"]
    if (
        not isinstance(index, str)
        or not _LEAF_INDEX.fullmatch(index)
        or int(index) > MAX_LEAF_INDEX
    ):
        raise DisclosureError(
            f"{where}: leafIndex must be a decimal integer from 0 to 2^63-1, without leading zeros"
        )
    return salt, int(index), leaf_hash


def disclosed_procedures(bundle: dict[str, Any]) -> list[Disclosed]:
    """Every Procedure entry with its disclosure and recomputed commitment, in Bundle order.

    The Bundle must hold exactly one Claim (without a disclosure) and at least one Procedure, every
    Procedure disclosed once, at distinct fullUrls, leaves and commitments; nothing else.
    """
    out: list[Disclosed] = []
    claims = 0
    full_urls: set[str] = set()
    leaves: set[int] = set()
    commitments: set[bytes] = set()
    for i, entry in enumerate(_entries(bundle)):
        kind = _resource_type(entry, i)
        ext = _disclosure(entry, i)
        full_url = entry.get("fullUrl")
        if full_url is not None:
            if not isinstance(full_url, str) or not _FULL_URL.fullmatch(full_url):
                raise DisclosureError(f"Bundle.entry[{i}].fullUrl must be a URI without spaces")
            if full_url in full_urls:
                raise DisclosureError(f"Bundle.entry[{i}].fullUrl {full_url!r} is not unique")
            full_urls.add(full_url)
        if kind == "Claim":
            if ext is not None:
                raise DisclosureError(f"Bundle.entry[{i}] is the Claim: it discloses no anchor")
            claims += 1
            continue
        if kind in CONTEXT_RESOURCES:
            if ext is not None:
                raise DisclosureError(f"Bundle.entry[{i}] is a {kind}: it discloses no anchor")
            continue  # context the verifier reads (coverage, patient), not billed
        if kind != "Procedure":
            raise DisclosureError(
                f"Bundle.entry[{i}] is a {_show(kind)}: a claim Bundle holds one Claim, the "
                "Procedures it bills and optionally " + ", ".join(sorted(CONTEXT_RESOURCES))
            )
        procedure = entry["resource"]
        if ext is None:
            inner = procedure.get("extension")
            inside = isinstance(inner, list) and any(
                isinstance(x, dict) and x.get("url") == EXTENSION_URL for x in inner
            )
            raise DisclosureError(
                f"Bundle.entry[{i}] (a Procedure) has no anchor disclosure"
                + (
                    ": it belongs in Bundle.entry.extension, not inside the Procedure, which must "
                    "stay exactly as committed"
                    if inside
                    else f": Bundle.entry[{i}].extension must hold {EXTENSION_URL}"
                )
            )
        if entry.get("modifierExtension"):
            raise DisclosureError(f"Bundle.entry[{i}] has a modifierExtension ClaimProof refuses")
        if full_url is None:
            raise DisclosureError(
                f"Bundle.entry[{i}] (a Procedure) needs a fullUrl for the Claim to reference"
            )
        salt, leaf_index, leaf_hash = _parse_disclosure(ext, i)
        try:
            commitment = anchor.commitment(salt, procedure)
        except anchor.AnchorError as exc:
            raise DisclosureError(f"Bundle.entry[{i}]: {exc}") from exc
        if leaf_index in leaves:
            raise DisclosureError(f"Bundle.entry[{i}] discloses leaf {leaf_index} again")
        if commitment in commitments:
            raise DisclosureError(f"Bundle.entry[{i}] discloses the same Procedure and salt again")
        leaves.add(leaf_index)
        commitments.add(commitment)
        out.append(Disclosed(i, full_url, procedure, salt, leaf_index, leaf_hash, commitment))
    if claims != 1:
        raise DisclosureError(f"the Bundle must hold exactly one Claim, not {claims}")
    if not out:
        raise DisclosureError("the Bundle bills no Procedure")
    return out


def disclose(
    procedure: dict[str, Any], salt: bytes, leaf_index: int, leaf_hash: bytes, full_url: str
) -> dict[str, Any]:
    """The Bundle entry that discloses ``procedure`` with its anchor (what the provider sends)."""
    if not isinstance(procedure, dict) or procedure.get("resourceType") != "Procedure":
        raise DisclosureError("only a FHIR Procedure is disclosed")
    if len(salt) != SALT_BYTES or len(leaf_hash) != LEAF_HASH_BYTES:
        raise DisclosureError(f"the salt and the leaf hash are {SALT_BYTES} bytes each")
    if isinstance(leaf_index, bool) or not 0 <= leaf_index <= MAX_LEAF_INDEX:
        raise DisclosureError("the leaf index is an integer from 0 to 2^63-1")
    if not isinstance(full_url, str) or not _FULL_URL.fullmatch(full_url):
        raise DisclosureError("fullUrl must be a URI without spaces")
    return {
        "extension": [
            {
                "url": EXTENSION_URL,
                "extension": [
                    {"url": "salt", "valueBase64Binary": base64.b64encode(salt).decode("ascii")},
                    {"url": "leafIndex", "valueString": str(leaf_index)},
                    {
                        "url": "leafHash",
                        "valueBase64Binary": base64.b64encode(leaf_hash).decode("ascii"),
                    },
                ],
            }
        ],
        "fullUrl": full_url,
        "resource": procedure,
    }


def sign_bundle(
    bundle: dict[str, Any],
    private_jwk: dict[str, Any],
    kid: str | None = None,
    *,
    who: str,
    when: str,
) -> dict[str, Any]:
    """Sign a claim Bundle as a provider's client does; return the Bundle with its signature.

    The Bundle is first put through ``json`` (as sending it will), so that what is signed is
    exactly what the insurer's ``canonical_payload`` recomputes from the bytes it receives.
    """
    if not isinstance(who, str) or not who:
        raise DisclosureError("who is the reference of the provider Organization")
    if not isinstance(when, str) or not _INSTANT.fullmatch(when):
        raise DisclosureError("when must be a FHIR instant such as 2025-03-14T15:09:26Z")
    try:
        sent = json.loads(json.dumps(bundle, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise DisclosureError(f"the Bundle is not JSON: {exc}") from exc
    if not isinstance(sent, dict):
        raise DisclosureError("the Bundle must be a JSON object")
    sent.pop("signature", None)
    _check_depth(sent)
    compact = jws.sign_detached(_jcs(sent), private_jwk, kid)
    sent["signature"] = {
        "type": [dict(SIGNATURE_TYPE)],
        "when": when,
        "who": {"reference": who},
        "sigFormat": SIG_FORMAT,
        "data": base64.b64encode(compact.encode("ascii")).decode("ascii"),
    }
    return sent
