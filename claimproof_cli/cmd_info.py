"""``claimproof claim info | answer``: the insurer's requests for information, and the answer.

The answer is a FHIR DocumentReference or Binary: given as a JSON file (``--resource``), or
made here from any document (``--file``: a DocumentReference whose one attachment holds the
file's bytes in base64, with its content type, size, SHA-1 hash and title).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claimproof_cli import OK, usage
from claimproof_cli.cmd_claim import _safe
from claimproof_cli.context import Context, read_bytes, read_json

ATTACHMENT_TYPES = ("DocumentReference", "Binary")


def _describe(requests: list[dict[str, Any]]) -> str:
    if not requests:
        return "no request for information on this claim"
    lines = []
    for r in requests:
        state = f"answered {r['answered_at']}" if r.get("answered") else "OPEN: answer it"
        lines.append(f"{r['requested_at']}  {r['reason']} ({r['reason_code']})  [{state}]")
        lines.append(f"  {r['question']}")
        if r.get("answer_text"):
            lines.append(f"  your answer: {r['answer_text']}")
    return "\n".join(lines)


def info(ctx: Context) -> int:
    requests = ctx.client.get_json(f"/api/v1/claims/{_safe(ctx.args.id)}/info-requests")
    ctx.emit(requests, _describe(requests))
    return OK


def document_reference(path: str, content_type: str | None, title: str | None) -> dict:
    """A DocumentReference carrying the file inline (FHIR R4 Attachment)."""
    raw = read_bytes(path, "the document")
    kind = content_type or mimetypes.guess_type(path)[0] or "application/octet-stream"
    name = title or Path(path).name
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": name,
        "content": [
            {
                "attachment": {
                    "contentType": kind,
                    "data": base64.b64encode(raw).decode("ascii"),
                    "size": len(raw),
                    "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"),  # noqa: S324 - FHIR Attachment.hash is SHA-1
                    "title": name,
                }
            }
        ],
    }


def answer(ctx: Context) -> int:
    args = ctx.args
    if bool(args.resource) == bool(args.file):
        raise usage("give the answer as --resource FILE.json or as --file DOCUMENT (one of them)")
    if args.resource:
        resource = read_json(args.resource, "the FHIR resource file")
        if not isinstance(resource, dict) or resource.get("resourceType") not in ATTACHMENT_TYPES:
            raise usage(f"{args.resource!r} is not a FHIR DocumentReference or Binary")
    else:
        resource = document_reference(args.file, args.content_type, args.title)
    answered = ctx.client.post_json(
        f"/api/v1/claims/{_safe(args.id)}/info-requests/answer",
        {"attachment": resource, "text": args.text or ""},
    ).json()
    ctx.emit(
        answered,
        f"answered: {answered['question']}\nthe claim goes back to the insurer's adjusters",
    )
    return OK
