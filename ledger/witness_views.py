"""This node as a witness over HTTP: C2SP tlog-witness ``POST <prefix>/add-checkpoint``.

Configured by ``LEDGER_WITNESS_NAME`` (its key from ``LEDGER_WITNESS_KEY_<NAME>`` or
``var/keys/witnesses/<name>.key``) and ``LEDGER_WITNESS_LOGS`` (``{origin: log verifier key}``).
The checks and the compare-and-swap are :func:`ledger.witness.witness_add_checkpoint`'s.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from ledger import conf, keys, note, tlog_witness, witness
from ledger.checkpoint import Checkpoint, CheckpointError

log = logging.getLogger(__name__)


_CONFIG: dict[tuple, tuple[str | None, dict[str, list[str]]]] = {}


def _config(name: str) -> tuple[str | None, dict[str, list[str]]]:
    """The witness's signer key and the logs it follows, parsed once per process for as long as
    the settings, the key's environment variable and its file's mtime stay the same."""
    path = keys.witnesses_dir() / f"{name}.key"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = None
    memo = (
        name,
        repr(getattr(settings, "LEDGER_WITNESS_LOGS", None)),
        os.environ.get(keys.witness_key_env(name)),
        str(path),
        mtime,
    )
    got = _CONFIG.get(memo)
    if got is None:
        got = (keys.local_witness_signer_key(name), conf.witness_logs())
        if len(_CONFIG) > 16:
            _CONFIG.clear()
        _CONFIG[memo] = got
    return got


def _text(status: int, detail: str) -> HttpResponse:
    return HttpResponse(detail + "\n", status=status, content_type="text/plain; charset=utf-8")


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_POST
def add_checkpoint(request: HttpRequest) -> HttpResponse:
    return _no_store(_add_checkpoint(request))


def _add_checkpoint(request: HttpRequest) -> HttpResponse:
    name = conf.witness_name()
    if not name:
        return _text(404, "this node does not act as a witness")
    limit = conf.witness_max_body()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _text(413, f"an add-checkpoint request is at most {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _text(413, f"an add-checkpoint request is at most {limit} bytes")
    try:
        req = tlog_witness.parse_request(body)
        Checkpoint.parse(note.split_note(req.note_text)[0])
    except (tlog_witness.WireError, note.NoteError, CheckpointError) as exc:
        return _text(400, f"malformed add-checkpoint request: {exc}")
    signer, logs = _config(name)
    if signer is None:
        log.error("LEDGER_WITNESS_NAME is %r but this node has no key for it", name)
        return _text(503, "the witness key is not available")
    try:
        lines = witness.witness_add_checkpoint(
            witness_signer_key=signer,
            log_verifier_keys=logs,
            old_size=req.old_size,
            proof=req.proof,
            note_text=req.note_text,
        )
    except witness.SizeConflict as exc:
        size = 0 if exc.size is None else exc.size
        return HttpResponse(
            tlog_witness.format_size(size),
            status=409,
            content_type=tlog_witness.SIZE_CONTENT_TYPE,
        )
    except witness.WitnessRefusal as exc:
        if isinstance(exc, witness.BadProof):
            # Signed by the log yet inconsistent: possible evidence of a fork, keep it.
            log.warning("witness %s refused a bad proof: %s\n%s", name, exc, req.note_text)
        return _text(exc.status, exc.detail)
    return HttpResponse(lines, content_type=tlog_witness.COSIGNATURE_CONTENT_TYPE)
