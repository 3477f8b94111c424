"""``claimproof claim build | submit | status | response | wait``."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claimproof_cli import OK, REFUSED, CliError, usage
from claimproof_cli.context import Context, read_bytes, read_json, read_resource
from claimproof_cli.store import Procedure
from claims import disclosure

CONTEXT_TYPES = sorted(disclosure.CONTEXT_RESOURCES)
WORKING = ("received", "verifying")


# --- build -------------------------------------------------------------------------------------


def _procedure(ctx: Context, ref: str) -> Procedure:
    found = ctx.store.procedure(ref)
    if found is None and ref.isdigit():
        found = ctx.store.procedure_by_leaf(int(ref))
    if found is None:
        raise usage(f"no procedure {ref!r} in the store: anchor it first (claimproof anchor)")
    if not found.anchored:
        raise CliError(
            f"procedure {ref!r} was never acknowledged by the node: run `claimproof anchor` "
            f"on its file again (the same statement is resent)"
        )
    return found


def _wire(claim: dict[str, Any], procedures: list[Procedure]) -> dict[str, Any]:
    """Point ``Claim.procedure[]`` at the disclosed entries; ``item.procedureSequence`` stays.

    An existing ``procedure[]`` keeps its sequence, date and type: an element that names one of
    the procedures (``Procedure/<id>``) is pointed at it, the others at the rest in order. With
    no ``procedure[]`` one element per procedure is made, sequence 1, 2, ...
    """
    claim = copy.deepcopy(claim)
    existing = claim.get("procedure")
    if not existing:
        claim["procedure"] = [
            {"sequence": i, "procedureReference": {"reference": p.full_url}}
            for i, p in enumerate(procedures, start=1)
        ]
        return claim
    if not isinstance(existing, list) or len(existing) != len(procedures):
        raise usage(
            f"the Claim has {len(existing) if isinstance(existing, list) else '?'} "
            f"procedure[] elements but {len(procedures)} --procedure were given"
        )
    by_name = {f"Procedure/{p.procedure.get('id')}": p for p in procedures if "id" in p.procedure}
    named = [by_name.get(_reference(e)) for e in existing]
    rest = iter(p for p in procedures if p not in named)
    for element, chosen in zip(existing, named, strict=True):
        if not isinstance(element, dict):
            raise usage("Claim.procedure[] elements must be objects")
        element.pop("procedureCodeableConcept", None)
        element["procedureReference"] = {"reference": (chosen or next(rest)).full_url}
    return claim


def _check_sequences(claim: dict[str, Any]) -> None:
    """Every ``item.procedureSequence`` must name a ``Claim.procedure[].sequence``."""
    known = {p.get("sequence") for p in claim["procedure"] if isinstance(p, dict)}
    for item in claim.get("item") or []:
        if not isinstance(item, dict):
            continue
        for seq in item.get("procedureSequence") or []:
            if seq not in known:
                raise usage(
                    f"Claim item {item.get('sequence')} bills procedureSequence {seq}, but the "
                    f"Claim's procedures are {sorted(k for k in known if isinstance(k, int))}: "
                    f"give one --procedure per billed procedure"
                )


def _reference(element: object) -> str | None:
    if isinstance(element, dict) and isinstance(element.get("procedureReference"), dict):
        return element["procedureReference"].get("reference")
    return None


def build(ctx: Context) -> int:
    args = ctx.args
    claim = read_resource(args.claim, "Claim")
    procedures = [_procedure(ctx, ref) for ref in args.procedure]
    if len({p.ref for p in procedures}) != len(procedures):
        raise usage("a procedure is given twice")
    context = [_context_resource(path) for path in args.context or []]
    who = args.who or (claim.get("provider") or {}).get("reference")
    if not who:
        raise usage("the Claim has no provider.reference: give --who Organization/<you>")
    key = ctx.store.key(args.kid)
    wired = _wire(claim, procedures)
    _check_sequences(wired)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _now(),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": wired}]
        + [
            disclosure.disclose(p.procedure, p.salt, p.leaf_index, p.leaf_hash, p.full_url)
            for p in procedures
            if p.leaf_index is not None and p.leaf_hash is not None
        ]
        + [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in context],
    }
    try:
        signed = disclosure.sign_bundle(bundle, key.private_jwk, key.kid, who=who, when=_now())
        disclosure.disclosed_procedures(signed)  # what the insurer will check first
    except (disclosure.DisclosureError, ValueError) as exc:
        raise usage(f"cannot build the claim Bundle: {exc}") from None
    text = json.dumps(signed, indent=2, ensure_ascii=False) + "\n"
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        ctx.emit(
            {"output": args.output, "kid": key.kid, "procedures": [p.ref for p in procedures]},
            f"signed claim Bundle written to {args.output} (key {key.kid}, "
            f"{len(procedures)} procedure(s))",
        )
    else:
        sys.stdout.write(text)
    return OK


def _context_resource(path: str) -> dict[str, Any]:
    value = read_json(path, "the context resource file")
    if not isinstance(value, dict) or value.get("resourceType") not in CONTEXT_TYPES:
        raise usage(f"{path!r}: --context takes one of {', '.join(CONTEXT_TYPES)}")
    return value


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- submit and follow -------------------------------------------------------------------------


def submit(ctx: Context) -> int:
    raw = read_bytes(ctx.args.bundle, "the Bundle file")
    try:
        bundle = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise usage(f"the Bundle file {ctx.args.bundle!r} is not JSON: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise usage(f"{ctx.args.bundle!r} is not a FHIR Bundle (build one with `claim build`)")
    digest = hashlib.sha256(raw).hexdigest()
    key = ctx.args.idempotency_key or ctx.store.idempotency_key(digest, str(uuid.uuid4()))
    answer = ctx.client.post(
        "/api/v1/claims", raw, "application/fhir+json", {"Idempotency-Key": key}
    ).json()
    url = ctx.client.base_url + answer["url"]
    ctx.store.claim_submitted(digest, key, answer["id"], url)
    ctx.emit(
        {"id": answer["id"], "url": url, "status": answer["status"], "idempotency_key": key},
        f"claim {answer['id']} {answer['status']}\n{url}",
    )
    return OK


def _claim(ctx: Context, claim_id: str) -> dict[str, Any]:
    return ctx.client.get_json(f"/api/v1/claims/{_safe(claim_id)}")


def _safe(claim_id: str) -> str:
    if not claim_id or any(c in claim_id for c in "/?#% "):
        raise usage(f"{claim_id!r} is not a claim id")
    return claim_id


def _describe(claim: dict[str, Any]) -> str:
    lines = [
        f"claim    {claim['id']}",
        f"status   {claim['status']}",
        f"verdict  {claim.get('verdict') or '-'}",
        f"total    {claim.get('total')} {claim.get('currency', '')}".rstrip(),
    ]
    checks = claim.get("checks") or []
    if checks:
        lines.append("checks")
        for c in checks:
            lines.append(f"  {c['outcome'].upper():<6} {c['name']}: {c['sentence']}")
    return "\n".join(lines)


def status(ctx: Context) -> int:
    claim = _claim(ctx, ctx.args.id)
    ctx.emit(claim, _describe(claim))
    return OK


def response(ctx: Context) -> int:
    answer = ctx.client.get(f"/api/v1/claims/{_safe(ctx.args.id)}/ClaimResponse")
    sys.stdout.write(pretty_exact(answer.body) + "\n")
    return OK


def pretty_exact(raw: bytes) -> str:
    """Indented JSON whose numbers are written exactly as received (``105.00`` stays)."""
    marker = f"\0{uuid.uuid4().hex}:"
    try:
        value = json.loads(raw, parse_float=lambda s: marker + s, parse_int=lambda s: marker + s)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"the server's answer is not JSON: {exc}") from None
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return re.sub(rf'"\\u0000{marker[1:]}([-0-9.eE+]+)"', r"\1", text)


def wait(ctx: Context) -> int:
    deadline = time.monotonic() + ctx.args.wait_timeout
    while True:
        claim = _claim(ctx, ctx.args.id)
        if claim["status"] not in WORKING:
            ctx.emit(claim, _describe(claim))
            return OK
        if time.monotonic() >= deadline:
            ctx.emit({**claim, "timed_out": True}, _describe(claim))
            ctx.warn(f"still {claim['status']} after {ctx.args.wait_timeout:g} s")
            return REFUSED
        time.sleep(min(ctx.args.interval, max(0.0, deadline - time.monotonic())))
