"""``claimproof anchor``: commit to Procedures with fresh salts, sign, post, remember.

The salt and the signed statement are stored *before* the statement is sent, so that a retry
after a lost answer resends the very same bytes (the node answers 200 with the existing leaf)
instead of anchoring the procedure a second time under another salt.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rfc8785

from claimproof_cli import OK, REFUSED, CliError, usage
from claimproof_cli.context import Context, read_bytes, read_resource
from claimproof_cli.store import Procedure
from ledger import anchor, merkle, note

BATCH_MAX = 1000  # LEDGER_ANCHOR_BATCH_MAX's default


def member_key(ctx: Context) -> str:
    """The member's Go signer key: from --member-key (remembered) or the path in the store."""
    path = ctx.args.member_key or ctx.store.get("member_key_path")
    if not path:
        raise usage("no member anchor key: give --member-key FILE (it is remembered)")
    text = read_bytes(path, "the member key file").decode("utf-8", "replace").strip()
    try:
        key, _ = note.parse_signer_key(text)
    except note.NoteError as exc:
        raise usage(f"{path!r} is not a Go note signer key (PRIVATE+KEY+...): {exc}") from None
    if key.alg != note.ALG_ED25519:
        raise usage(f"{path!r} is a cosigning key; anchors are signed with the anchor key")
    if ctx.args.member_key:
        ctx.store.set("member_key_path", str(Path(path).resolve()))
    return text


def _files(paths: list[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
            if not found:
                raise usage(f"the directory {raw!r} has no .json file")
            yield from found
        else:
            yield path


def _prepare(ctx: Context, path: Path, signer_key: str) -> Procedure:
    """The store's record of this Procedure: found again (a retry), or committed and signed."""
    procedure = read_resource(path, "Procedure")
    try:
        jcs = rfc8785.dumps(procedure)
    except rfc8785.CanonicalizationError as exc:
        raise usage(f"{str(path)!r} cannot be canonicalised (RFC 8785): {exc}") from None
    ref = procedure.get("id")
    if ref is not None and (not isinstance(ref, str) or not ref):
        raise usage(f"{str(path)!r}: Procedure.id must be a non-empty string")
    known = ctx.store.procedure(ref) if ref else ctx.store.procedure_by_content(jcs)
    if known is not None:
        if rfc8785.dumps(known.procedure) != jcs:
            raise usage(
                f"procedure {ref!r} is already anchored with other content; a changed "
                f"Procedure needs another id"
            )
        return known
    salt = anchor.new_salt()
    commitment = anchor.commitment(salt, procedure)
    statement = anchor.statement_sign(commitment=commitment, signer_key=signer_key)
    record = Procedure(
        ref=ref or commitment.hex()[:16],
        procedure=json.loads(jcs),
        salt=salt,
        commitment=commitment,
        statement=statement,
        full_url=f"urn:uuid:{uuid.uuid4()}",
        leaf_index=None,
        leaf_hash=None,
    )
    ctx.store.procedure_add(record, jcs)
    return record


def _accept(ctx: Context, record: Procedure, leaf: dict[str, Any]) -> dict[str, Any]:
    """Check the node's answer against the statement sent, then keep the leaf reference."""
    try:
        index = int(leaf["index"])
        leaf_hash = base64.b64decode(leaf["leaf_hash"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CliError(f"the node's answer has no usable leaf: {exc}") from None
    if leaf_hash != merkle.leaf_hash(record.statement):
        raise CliError(
            f"the node answered leaf {index} with hash {leaf['leaf_hash']}, which is not the "
            f"hash of the statement sent for {record.ref!r}"
        )
    ctx.store.procedure_anchored(record.ref, index, leaf_hash)
    return {
        "procedure": record.ref,
        "leaf_index": index,
        "leaf_hash": leaf["leaf_hash"],
        "sealed": bool(leaf.get("sealed")),
        "full_url": record.full_url,
    }


def _line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"REFUSED  {result['procedure']}: {result['error']}"
    return f"anchored {result['procedure']} at leaf {result['leaf_index']}  {result['leaf_hash']}"


def run(ctx: Context) -> int:
    signer_key = member_key(ctx)
    files = list(_files(ctx.args.files))
    if len(files) > 1 and not ctx.args.batch:
        raise usage("several files: add --batch to send them in one request")
    records = [_prepare(ctx, path, signer_key) for path in files]
    if ctx.args.batch:
        results = _post_batch(ctx, records)
    else:
        [record] = records
        leaf = ctx.client.post("/api/v1/anchors", record.statement, "application/json").json()
        results = [_accept(ctx, record, leaf)]
    refused = sum("error" in r for r in results)
    ctx.emit(
        {"results": results, "anchored": len(results) - refused, "refused": refused},
        "\n".join(_line(r) for r in results)
        + (
            "\nnot in a checkpoint yet: the node seals pending anchors every few seconds"
            if any(not r.get("sealed", True) for r in results)
            else ""
        ),
    )
    return REFUSED if refused else OK


def _post_batch(ctx: Context, records: list[Procedure]) -> list[dict[str, Any]]:
    results = []
    for start in range(0, len(records), BATCH_MAX):
        chunk = records[start : start + BATCH_MAX]
        body = b"\n".join(r.statement for r in chunk) + b"\n"
        answer = ctx.client.post("/api/v1/anchors", body, "application/x-ndjson").json()
        lines = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(lines, list) or len(lines) != len(chunk):
            raise CliError("the node's batch answer does not have one result per statement")
        for record, line in zip(chunk, lines, strict=True):
            if line.get("status") in (200, 201):
                results.append(_accept(ctx, record, line))
            else:
                results.append(
                    {
                        "procedure": record.ref,
                        "status": line.get("status"),
                        "code": line.get("code"),
                        "error": f"{line.get('status')} {line.get('code')}: {line.get('detail')}",
                    }
                )
    return results
