"""Keep-alive HTTP between consortium nodes (stdlib only): a small pool of connections per origin.

The operator asks each witness for a cosignature after every seal, and a mirror fetches many
tiles from one log: a new TCP (and TLS) connection per request would cost more than the request.
:func:`request` takes an idle connection to the URL's ``scheme://host:port`` from the pool (or
opens one), sends, reads the whole answer and puts the connection back when the server keeps it
open. A reused connection that the server closed while idle fails before any answer; the request
is then sent once more on a new connection, as urllib3 does (both callers' requests are safe to
repeat: a witness never cosigns inconsistently, tiles are immutable).
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass

MAX_IDLE_PER_ORIGIN = 8
# What a server closing an idle keep-alive connection looks like on the next request.
_STALE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    truncated: bool  # the answer was longer than the caller's limit

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""


_Key = tuple[str, str, int]


class Pool:
    """Idle connections by (scheme, host, port); thread-safe, a connection serves one request at
    a time."""

    def __init__(self, max_idle: int = MAX_IDLE_PER_ORIGIN):
        self.max_idle = max_idle
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far (for tests and benchmarks)

    def _take(
        self, key: _Key, timeout: float, fresh: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle and not fresh:
                conn = idle.pop()
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
            self.opened += 1
        scheme, host, port = key
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(host, port, timeout=timeout), False

    def _give_back(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
        max_body: int,
    ) -> Response:
        """One request; any HTTP status is a Response, a network fault raises OSError (or
        ``http.client.HTTPException``), a URL that is not http(s) raises ValueError."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:80]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):
            conn, reused = self._take(key, timeout, fresh=attempt > 0)
            try:
                conn.request(method, target, body=body, headers=headers or {})
                answer = conn.getresponse()
                data = answer.read(max_body + 1)
            except _STALE:
                conn.close()
                if reused:
                    continue  # closed by the server while idle: once more on a new connection
                raise
            except BaseException:
                conn.close()
                raise
            truncated = len(data) > max_body
            if truncated or answer.will_close or not answer.isclosed():
                conn.close()  # not read to its end, or the server closes it: not reusable
            else:
                self._give_back(key, conn)
            return Response(answer.status, answer.headers, data[:max_body], truncated)
        raise AssertionError("unreachable")


# One pool per process, shared by the witness client and the mirror.
POOL = Pool()
