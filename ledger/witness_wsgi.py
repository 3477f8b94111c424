"""``POST /add-checkpoint`` served in front of Django: the witness's hot path, without the
middleware stack (sessions, CSRF, auth, messages, htmx: none of which a witness request uses)
and the URL resolver.

:class:`WitnessDispatch` wraps the node's WSGI application (config/wsgi.py). It answers only a
POST to exactly ``/add-checkpoint`` on a node that acts as a witness, with a Host header Django
accepts, and when no HTTPS redirect or HSTS is configured; everything else (another path or
method, an unknown host, a node that is no witness) goes to Django unchanged, which answers as
before (405 with ``Allow: POST``, 400 for a host not allowed, 404...). The answer itself is
:func:`ledger.witness_views.answer`'s, the one the Django view gives, with the headers the
middleware would have added (``X-Content-Type-Options``, ``X-Frame-Options``,
``Referrer-Policy``, ``Cross-Origin-Opener-Policy``) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.db import connections

from ledger import conf, witness_views

log = logging.getLogger(__name__)

PATH = "/add-checkpoint"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_HOST_KEYS = ("HTTP_HOST", "HTTP_X_FORWARDED_HOST", "SERVER_NAME", "SERVER_PORT")

StartResponse = Callable[..., Any]


class WitnessDispatch:
    """WSGI middleware: the witness's add-checkpoint fast path, Django for everything else."""

    def __init__(self, app: Callable[[dict, StartResponse], Iterable[bytes]]):
        self.app = app
        self._hosts: dict[tuple, bool] = {}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or not conf.witness_name()
            or getattr(settings, "SECURE_SSL_REDIRECT", False)
            or getattr(settings, "SECURE_HSTS_SECONDS", 0)
            or not self._host_allowed(environ)
        ):
            return self.app(environ, start_response)
        try:
            got = _answer(environ)
        except Exception:
            log.exception("add-checkpoint failed")
            got = witness_views.Answer(500, "text/plain; charset=utf-8", b"internal error\n")
        finally:
            _after_request()
        status = got.status
        headers = [
            ("Content-Type", got.content_type),
            ("Content-Length", str(len(got.body))),
            ("Cache-Control", "no-store"),
            *_security_headers(),
        ]
        start_response(f"{status} {_REASONS.get(status, 'Unknown')}", headers)
        return [got.body]

    def _host_allowed(self, environ: dict) -> bool:
        """Django's own Host check (``ALLOWED_HOSTS``, ``USE_X_FORWARDED_HOST``), remembered per
        distinct header values (a few per deployment)."""
        key = (
            *(environ.get(k) for k in _HOST_KEYS),
            tuple(settings.ALLOWED_HOSTS),
            settings.DEBUG,
            getattr(settings, "USE_X_FORWARDED_HOST", False),
        )
        ok = self._hosts.get(key)
        if ok is None:
            try:
                WSGIRequest(environ).get_host()
                ok = True
            except DisallowedHost:
                ok = False
            if len(self._hosts) > 64:
                self._hosts.clear()
            self._hosts[key] = ok
        return ok


def _answer(environ: dict) -> witness_views.Answer:
    limit = conf.witness_max_body()
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            declared = max(int(length), 0)
        except ValueError:
            declared = 0  # as Django reads it: no body, so a malformed request
        if declared > limit:
            return witness_views.too_large(limit)
        body = _read(stream, declared)
    elif environ.get("wsgi.input_terminated"):  # chunked, and the server marks the end
        body = _read(stream, limit + 1)
        if len(body) > limit:
            return witness_views.too_large(limit)
    else:
        body = b""  # as Django does: no length, no body
    return witness_views.answer(body)


def _read(stream: Any, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _security_headers() -> list[tuple[str, str]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to every answer."""
    out = []
    if getattr(settings, "SECURE_CONTENT_TYPE_NOSNIFF", True):
        out.append(("X-Content-Type-Options", "nosniff"))
    frame = getattr(settings, "X_FRAME_OPTIONS", "DENY")
    if frame:
        out.append(("X-Frame-Options", frame.upper()))
    referrer = getattr(settings, "SECURE_REFERRER_POLICY", "same-origin")
    if referrer:
        value = referrer if isinstance(referrer, str) else ",".join(referrer)
        out.append(("Referrer-Policy", value))
    coop = getattr(settings, "SECURE_CROSS_ORIGIN_OPENER_POLICY", "same-origin")
    if coop:
        out.append(("Cross-Origin-Opener-Policy", coop))
    return out


def _after_request() -> None:
    """What Django's ``request_finished`` does for the database, cheaply: close a connection
    that saw an error it may not recover from, left autocommit off, or outlived
    ``CONN_MAX_AGE``. A healthy one stays open (the witness's statements check it themselves)."""
    now = time.monotonic()
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        if (
            connection.errors_occurred
            or (connection.close_at is not None and now >= connection.close_at)
            or connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]
        ):
            connection.close_if_unusable_or_obsolete()
