"""This node as a witness over HTTP: C2SP tlog-witness ``POST <prefix>/add-checkpoint``.

Configured by ``LEDGER_WITNESS_NAME`` (its key from ``LEDGER_WITNESS_KEY_<NAME>`` or
``var/keys/witnesses/<name>.key``) and ``LEDGER_WITNESS_LOGS`` (``{origin: log verifier key}``).
The checks and the compare-and-swap are :func:`ledger.witness.witness_add_checkpoint`'s.
"""

from __future__ import annotations

import logging
import os
import time
from typing import NamedTuple

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from ledger import conf, keys, note, tlog_witness, witness
from ledger.checkpoint import Checkpoint, CheckpointError

log = logging.getLogger(__name__)


_CONFIG: dict[tuple, tuple[str | None, dict[str, list[str]]]] = {}
# The last (settings and environment seen, when, config): checked per request without the key
# file's stat, which is taken again at most once per _RECHECK_S.
_HOT: tuple[tuple, float, tuple[str | None, dict[str, list[str]]]] | None = None
_RECHECK_S = 1.0


def _config(name: str) -> tuple[str | None, dict[str, list[str]]]:
    """The witness's signer key and the logs it follows, parsed once per process for as long as
    the settings, the key's environment variable and its file's mtime stay the same."""
    global _HOT
    seen = (
        name,
        getattr(settings, "LEDGER_WITNESS_LOGS", None),
        getattr(settings, "LEDGER_KEYS_DIR", None),
        os.environ.get(keys.witness_key_env(name)),
    )
    hot, now = _HOT, time.monotonic()
    if hot is not None and now - hot[1] < _RECHECK_S and _same(hot[0], seen):
        return hot[2]
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
    _HOT = (seen, now, got)
    return got


def _same(a: tuple, b: tuple) -> bool:
    """The same name and key variable, and the same settings objects (by identity: an override
    replaces them; holding them keeps their ids from being reused)."""
    return a[0] == b[0] and a[1] is b[1] and a[2] is b[2] and a[3] == b[3]


class Answer(NamedTuple):
    """An add-checkpoint answer: the status, its content type and its body."""

    status: int
    content_type: str
    body: bytes


_TEXT = "text/plain; charset=utf-8"


def _text(status: int, detail: str) -> Answer:
    return Answer(status, _TEXT, (detail + "\n").encode("utf-8"))


def too_large(limit: int) -> Answer:
    return _text(413, f"an add-checkpoint request is at most {limit} bytes")


def answer(body: bytes) -> Answer:
    """The witness's answer to an add-checkpoint request body (at most
    ``conf.witness_max_body()`` bytes, read by the caller): shared by the Django view and the
    WSGI fast path (:mod:`ledger.witness_wsgi`), so both answer alike."""
    got = prepare(body)
    if isinstance(got, Answer):
        return got
    return decide(got)


def prepare(body: bytes) -> witness.Prepared | Answer:
    """The checks of a request body that need no state (malformed 400, no witness or unknown log
    404, not signed 403, old size 400, no key 503): the answer, or the request to decide.
    Shared with the dedicated witness server (:mod:`ledger.witness_server`), which decides
    several at once."""
    name = conf.witness_name()
    if not name:
        return _text(404, "this node does not act as a witness")
    try:
        req = tlog_witness.parse_request(body)
    except tlog_witness.WireError as exc:
        return _text(400, f"malformed add-checkpoint request: {exc}")
    # The checkpoint is the note's text up to its signature block; the note is parsed once, by
    # the log's signature check. A malformed note is still answered 400 before anything else
    # (_malformed, asked on every other way out), as when it was parsed first.
    text = req.note_text
    try:
        cp = Checkpoint.parse(text[: text.rfind("\n\n") + 1])
    except CheckpointError as exc:
        return _malformed(text) or _text(400, f"malformed add-checkpoint request: {exc}")
    signer, logs = _config(name)
    if signer is None:
        log.error("LEDGER_WITNESS_NAME is %r but this node has no key for it", name)
        return _malformed(text) or _text(503, "the witness key is not available")
    try:
        return witness.prepare_add_checkpoint(
            witness_signer_key=signer,
            log_verifier_keys=logs,
            old_size=req.old_size,
            proof=req.proof,
            note_text=text,
            checkpoint=cp,
        )
    except witness.WitnessRefusal as exc:
        return _malformed(text) or refusal(exc, text)


def _malformed(note_text: str) -> Answer | None:
    """400 when the signed note itself is malformed (then that is the answer), else None. A note
    whose log signature verified is well formed: this runs only on the way to a refusal."""
    try:
        note.split_note(note_text)
    except note.NoteError as exc:
        return _text(400, f"malformed add-checkpoint request: {exc}")
    return None


def decide(prepared: witness.Prepared) -> Answer:
    """Decide a prepared request against the witness's state (:func:`witness.add_prepared`)."""
    try:
        lines = witness.add_prepared(prepared)
    except witness.WitnessRefusal as exc:
        return refusal(exc, prepared.note_text)
    return cosigned(lines)


def cosigned(lines: str) -> Answer:
    return Answer(200, tlog_witness.COSIGNATURE_CONTENT_TYPE, lines.encode("utf-8"))


def refusal(exc: witness.WitnessRefusal, note_text: str) -> Answer:
    """The protocol's answer to a refusal (409 carries the size it cosigned)."""
    if isinstance(exc, witness.SizeConflict):
        size = 0 if exc.size is None else exc.size
        return Answer(409, tlog_witness.SIZE_CONTENT_TYPE, tlog_witness.format_size(size))
    if isinstance(exc, witness.BadProof):
        # Signed by the log yet inconsistent: possible evidence of a fork, keep it.
        log.warning("witness %s refused a bad proof: %s\n%s", conf.witness_name(), exc, note_text)
    return _text(exc.status, exc.detail)


@csrf_exempt
@require_POST
def add_checkpoint(request: HttpRequest) -> HttpResponse:
    got = _add_checkpoint(request)
    response = HttpResponse(got.body, status=got.status, content_type=got.content_type)
    response["Cache-Control"] = "no-store"
    return response


def _add_checkpoint(request: HttpRequest) -> Answer:
    if not conf.witness_name():
        return _text(404, "this node does not act as a witness")
    limit = conf.witness_max_body()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return too_large(limit)
    body = request.read(limit + 1)
    if len(body) > limit:
        return too_large(limit)
    return answer(body)
