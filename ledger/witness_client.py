"""The log operator's side of C2SP tlog-witness: ``POST <witness URL>/add-checkpoint`` (stdlib).

One request per attempt with a short timeout, on a keep-alive connection pooled per witness
(:mod:`ledger.mirror_http`); network faults, 5xx answers and malformed answers
are retried with exponential backoff a bounded number of times. The witness's refusals become the
:mod:`ledger.witness` exceptions the in-process witness raises (409 → :class:`SizeConflict`
with the size from the answer's body), so the caller handles both witnesses alike.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger import mirror_http, tlog_witness, witness

USER_AGENT = "ClaimProof-log/1 (C2SP tlog-witness client)"
_REFUSALS: dict[int, type[witness.WitnessRefusal]] = {
    400: witness.BadOldSize,
    403: witness.NotSigned,
    404: witness.UnknownLog,
    422: witness.BadProof,
}


class WitnessUnavailable(Exception):
    """The witness could not be asked: no key on this node, the network, or a broken answer."""


class _Retry(Exception):
    """A fault worth another attempt."""


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def add_checkpoint_url(witness_url: str) -> str:
    """The add-checkpoint URL under a witness's submission prefix."""
    return witness_url.rstrip("/") + "/add-checkpoint"


def post(url: str, body: bytes, timeout: float, max_answer: int = 65536) -> Answer:
    """One POST on a pooled keep-alive connection to the witness (:mod:`ledger.mirror_http`);
    any HTTP status is an answer, a network fault raises OSError."""
    response = mirror_http.POOL.request(
        "POST",
        url,
        body=body,
        headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT},
        timeout=timeout,
        max_body=max_answer,
    )
    return Answer(response.status, response.header("Content-Type"), response.body)


def _interpret(answer: Answer) -> list[str]:
    if answer.status == 200:
        try:
            return tlog_witness.parse_cosignatures(answer.body)
        except tlog_witness.WireError as exc:
            raise _Retry(f"malformed answer: {exc}") from exc
    detail = answer.body[:300].decode("utf-8", "replace").strip()
    if answer.status == 409:
        try:
            size = tlog_witness.parse_size(answer.body)
        except tlog_witness.WireError:
            size = None
        raise witness.SizeConflict(f"the witness is at size {size}", size=size)
    if answer.status in _REFUSALS:
        raise _REFUSALS[answer.status](f"{answer.status}: {detail}")
    if answer.status >= 500:
        raise _Retry(f"{answer.status}: {detail}")
    raise WitnessUnavailable(f"unexpected answer {answer.status}: {detail}")


def request_cosignatures(
    witness_url: str,
    *,
    old_size: int,
    proof: list[bytes],
    note_text: str,
    timeout: float,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    send: Callable[[str, bytes, float], Answer] | None = None,
) -> list[str]:
    """The cosignature lines a witness answers for ``note_text``; raises a refusal or
    :class:`WitnessUnavailable` after ``1 + retries`` failed attempts."""
    send = send or post
    url = add_checkpoint_url(witness_url)
    body = tlog_witness.format_request(old_size, proof, note_text)
    fault: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            return _interpret(send(url, body, timeout))
        except _Retry as exc:
            fault = exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            fault = exc
        except ValueError as exc:  # not a URL urllib can open
            raise WitnessUnavailable(f"{url}: {exc}") from exc
    raise WitnessUnavailable(f"{url}: no answer after {retries + 1} attempts ({fault})")
