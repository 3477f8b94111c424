"""A dedicated witness server: C2SP tlog-witness ``POST /add-checkpoint`` in one asyncio process,
with a group commit.

``manage.py witness_serve --bind 127.0.0.1:PORT`` runs it beside the node's app (a reverse
proxy routes the node's ``/add-checkpoint`` to it; docs/consortium.md). Each connection is an
:class:`asyncio.Protocol` whose HTTP/1.1 is parsed by ``httptools`` (llhttp, as uvicorn's): the
HTTP work per request is a small part of the witness's own. The answers are
:mod:`ledger.witness_views`' (the parsing, the log's signature and the refusals are that
module's and :mod:`ledger.witness`'s), so status, content type and body are the ones the Django
view gives. A request that asks to switch protocols (``Upgrade``) is refused with 400: llhttp
stops at its headers.

Group commit: the requests that arrive while a batch is in the database form the next batch.
A batch takes at most one request per log (the others wait for the next batch) and moves every
log's state in **one statement** (an ``UPDATE ... FROM unnest(...)`` compare-and-swap from the
(size, root) each request leads from, and an ``INSERT ... ON CONFLICT DO NOTHING`` for logs
never cosigned), run outside a transaction, so it is committed when it returns; only then are
the swapped requests cosigned and answered. A request whose swap matched nothing (another
request moved the row first), or whose old tree is not known without a read, is decided by
:func:`ledger.witness_views.decide` (read, refuse with fork evidence, or swap again, one
statement per swap) in a thread with Django's own connection. Every advance is conditional on
the row's (size, root), so two trees of one size can never both be cosigned, within this
process or with any other process using the same table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
import psycopg
from django.conf import settings
from django.db import close_old_connections, connections
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from ledger import conf, witness, witness_views

log = logging.getLogger(__name__)

PATH = b"/add-checkpoint"
_MAX_HEAD = 16 * 1024  # request line and headers
_MAX_QUEUED = 8  # answers owed on one connection (pipelined requests) before it stops reading
_TEXT = "text/plain; charset=utf-8"
STOP_TIMEOUT_S = 10.0
COMMITS_IN_FLIGHT = 2  # batches in the database at once, each on its own connection

# One statement: every log's compare-and-swap of the batch (at most one request per log). The
# batch goes as one JSON parameter (roots in hex): psycopg dumps it at C speed, where seven
# arrays cost its Python array dumpers a third of the batch's time in this process.
_BATCH = """
WITH req AS (
    SELECT origin, prior, old_size, decode(old_root, 'hex') AS old_root, size,
           decode(root, 'hex') AS root, note
      FROM json_to_recordset(%(batch)s::json) AS r(
           origin text, prior bool, old_size bigint, old_root text, size bigint, root text,
           note text)
), moved AS (
    UPDATE ledger_witnessstate w
       SET size = req.size, root_hash = req.root, note = req.note, updated_at = %(now)s
      FROM req
     WHERE req.prior AND w.witness = %(witness)s AND w.origin = req.origin
       AND w.size = req.old_size AND w.root_hash = req.old_root
    RETURNING w.origin
), added AS (
    INSERT INTO ledger_witnessstate (witness, origin, size, root_hash, note, updated_at)
    SELECT %(witness)s, req.origin, req.size, req.root, req.note, %(now)s
      FROM req WHERE NOT req.prior
    ON CONFLICT (witness, origin) DO NOTHING
    RETURNING origin
)
SELECT origin FROM moved UNION ALL SELECT origin FROM added
"""

Reply = Callable[[witness_views.Answer], None]


@dataclass
class _Slot:
    db: psycopg.AsyncConnection | None = None


@dataclass
class _Pending:
    prepared: witness.Prepared
    start: tuple[bool, int, bytes]  # (row exists, size, root) the swap starts from
    reply: Reply  # called once with the answer


def connection_params(alias: str = "default") -> dict[str, Any]:
    """psycopg's connection keywords for Django's database ``alias`` (its settings_dict, as
    Django itself connects), without Django's own cursor class and adapters.

    Django turns psycopg's prepared statements off unless ``OPTIONS`` names
    ``prepare_threshold``; this connection runs one statement over and over, so it keeps
    psycopg's default unless the settings say otherwise (a pooler without prepared statements)."""
    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context", "server_side_binding"):
        params.pop(key, None)
    if "prepare_threshold" not in connections[alias].settings_dict.get("OPTIONS", {}):
        params.pop("prepare_threshold", None)
    return params


class WitnessServer:
    """The server: ``await serve(sock)`` until ``stop()``."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.limit = conf.witness_max_body()
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._slots = [_Slot() for _ in range(COMMITS_IN_FLIGHT)]
        self._in_flight: set[str] = set()  # origins of the batches in the database
        # Django's ORM (the read-and-decide path, fork evidence) in one thread of its own.
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="witness-decide")
        self._heads: dict[tuple[int, str], bytes] = {}
        self._security = "".join(f"{k}: {v}\r\n" for k, v in _security_headers())
        self._hosts: dict[bytes, bool] = {}
        self.connections: set[_Connection] = set()
        self.busy = 0  # requests read and not yet answered
        self.batches = 0
        self.swaps = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def serve(self, sock: socket.socket) -> None:
        """Answer on the listening ``sock`` until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), sock=sock)
        batcher = asyncio.create_task(self._batcher())
        try:
            await self._stopped.wait()
        finally:
            server.close()  # no new connections; the requests in flight are answered first
            for conn in list(self.connections):
                conn.stop()  # closes it now if idle, else after its answers
            for _ in range(int(STOP_TIMEOUT_S * 20)):
                if not self.busy:
                    break
                await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.transport.close()
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher
            for item in self._queue:
                item.reply(_unavailable())
            for slot in self._slots:
                if slot.db is not None:
                    await slot.db.close()
            self._slow.shutdown(wait=True)

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()

    # --- HTTP -------------------------------------------------------------------------------

    def route(self, method: bytes, target: bytes, host: bytes) -> witness_views.Answer | None:
        """The answer for a request line and Host that is not add-checkpoint's, else None."""
        if target.split(b"?", 1)[0] != PATH:
            return witness_views.Answer(404, _TEXT, b"not found\n")
        if method != b"POST":
            return witness_views.Answer(405, _TEXT, b"add-checkpoint takes a POST\n")
        if not conf.witness_name():
            return witness_views.Answer(404, _TEXT, b"this node does not act as a witness\n")
        if not self._host_allowed(host):
            return witness_views.Answer(400, _TEXT, b"this host is not allowed\n")
        return None

    def encode(self, got: witness_views.Answer, close: bool) -> bytes:
        """The answer on the wire: the headers the Django view's answer has (Cache-Control and
        what its security middleware adds), ``Allow`` on a 405."""
        head = self._heads.get((got.status, got.content_type))
        if head is None:
            reason = HTTPStatus(got.status).phrase if got.status in _STATUSES else ""
            allow = "Allow: POST\r\n" if got.status == 405 else ""
            head = self._heads[(got.status, got.content_type)] = (
                f"HTTP/1.1 {got.status} {reason}\r\nContent-Type: {got.content_type}\r\n"
                f"Cache-Control: no-store\r\n{self._security}{allow}"
            ).encode("latin-1")
        tail = b"Connection: close\r\n\r\n" if close else b"\r\n"
        return b"%sContent-Length: %d\r\n%s%s" % (head, len(got.body), tail, got.body)

    def _host_allowed(self, host: bytes) -> bool:
        """Django's ``ALLOWED_HOSTS`` check of the ``Host`` header (``DEBUG`` adds localhost)."""
        ok = self._hosts.get(host)
        if ok is None:
            allowed = list(settings.ALLOWED_HOSTS)
            if settings.DEBUG and not allowed:
                allowed = [".localhost", "127.0.0.1", "[::1]"]
            domain, _port = split_domain_port(host.decode("latin-1"))
            ok = bool(domain) and validate_host(domain, allowed)
            if len(self._hosts) > 64:
                self._hosts.clear()
            self._hosts[host] = ok
        return ok

    # --- the witness ------------------------------------------------------------------------

    def submit(self, body: bytes, reply: Reply) -> None:
        """Answer an add-checkpoint body through ``reply``: at once when it needs no state,
        else after its batch is committed (or after the decide thread)."""
        prepared = witness_views.prepare(body)
        if isinstance(prepared, witness_views.Answer):
            reply(prepared)
            return
        start = witness.swap_from(prepared)
        if start is None:
            self._decide(prepared, reply)
            return
        self._queue.append(_Pending(prepared, start, reply))
        self._wake.set()

    def _decide(self, prepared: witness.Prepared, reply: Reply) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._slow, _decide_in_thread, prepared)
        future.add_done_callback(lambda f: reply(_result(f)))

    async def _batcher(self) -> None:
        """Start a batch whenever requests wait and a connection is free: up to
        ``COMMITS_IN_FLIGHT`` batches at once, of disjoint logs (one request per log in flight:
        the others wait for a later batch)."""
        tasks: set[asyncio.Task] = set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._slots:
                batch, rest, seen = [], [], set(self._in_flight)
                for item in self._queue:
                    origin = item.prepared.checkpoint.origin
                    if origin in seen:
                        rest.append(item)
                    else:
                        seen.add(origin)
                        batch.append(item)
                if not batch:
                    break
                self._queue = rest
                slot = self._slots.pop()
                origins = {item.prepared.checkpoint.origin for item in batch}
                self._in_flight |= origins
                task = asyncio.create_task(self._commit(slot, batch, origins))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def _commit(self, slot: _Slot, batch: list[_Pending], origins: set[str]) -> None:
        try:
            try:
                moved = await self._swap(slot, batch)
            except psycopg.Error:
                # A lost connection, or a deadlock with another server process's batch: each
                # request is decided alone (its own read and swap; 503 if that fails too).
                log.exception("the witness's group commit failed")
                if slot.db is not None:
                    with contextlib.suppress(psycopg.Error):
                        await slot.db.close()
                slot.db = None
                moved = set()
            self.batches += 1
            self.swaps += len(moved)
            # Committed: now they may be cosigned, all of them first (the signing code stays
            # in the CPU's caches; writing each answer between two signatures evicts it).
            answers = [
                witness_views.cosigned(witness.cosign_prepared(item.prepared))
                if item.prepared.checkpoint.origin in moved
                else None
                for item in batch
            ]
            for item, got in zip(batch, answers, strict=True):
                if got is not None:
                    witness.swapped(item.prepared)
                    item.reply(got)
                else:  # the row is not what the request leads from: read it and decide
                    self._decide(item.prepared, item.reply)
        finally:
            self._in_flight -= origins
            self._slots.append(slot)
            self._wake.set()

    async def _swap(self, slot: _Slot, batch: list[_Pending]) -> set[str]:
        """One statement, outside a transaction: committed when it returns."""
        if slot.db is None or slot.db.closed:
            slot.db = await psycopg.AsyncConnection.connect(
                **connection_params(self.alias), autocommit=True
            )
        rows = []
        for item in batch:
            cp, (exists, old_size, old_root) = item.prepared.checkpoint, item.start
            rows.append(
                {
                    "origin": cp.origin,
                    "prior": exists,
                    "old_size": old_size,
                    "old_root": old_root.hex(),
                    "size": cp.size,
                    "root": cp.root_hash.hex(),
                    "note": item.prepared.note_text,
                }
            )
        params = {
            "batch": json.dumps(rows),
            "witness": batch[0].prepared.witness,
            "now": timezone.now(),
        }
        cursor = await slot.db.execute(_BATCH, params, prepare=True)
        return {row[0] for row in await cursor.fetchall()}


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed as they arrive, answered in their order (HTTP/1.1
    pipelining), kept alive unless the client or a refusal before the body ends it."""

    def __init__(self, server: WitnessServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.owed: deque[list] = deque()  # [answer bytes or None, close after it], in order
        self.closing = False  # no more requests are read; close after the answers owed
        self.reading = True
        self.writable = True
        self._head = 0  # bytes of the request line and headers so far
        self._in_body = False
        self._refused = False  # answered before its body: the rest of the connection is dropped
        self._url = b""
        self._host = b""
        self._length: int | None = None
        self._body: list[bytes] = []
        self._size = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        if self.server._stopping:
            self.stop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self._in_body:
            self._head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # refused in on_headers_complete: the connection is closing
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request\n")
            return
        if not self._in_body and self._head > _MAX_HEAD and not self.closing:
            self._fail(431, b"the request line and headers are too large\n")

    def pause_writing(self) -> None:
        self.writable = False
        self._flow()

    def resume_writing(self) -> None:
        self.writable = True
        self._flow()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._host, self._length = b"", b"", None
        self._body, self._size = [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"host":
            self._host = value
        elif name == b"content-length":
            self._length = int(value)  # llhttp has checked that it is a number

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        self._in_body = True
        server = self.server
        got = server.route(self.parser.get_method(), self._url, self._host)
        if got is None and self.parser.should_upgrade():
            got = witness_views.Answer(400, _TEXT, b"this server does not switch protocols\n")
        if got is None and self._length is not None and self._length > server.limit:
            got = witness_views.too_large(server.limit)
        if got is not None:  # answered without reading the body: then the connection ends
            self._refused = True
            self._answer_now(got, close=True)

    def on_body(self, body: bytes) -> None:
        if self._refused or self.closing:
            return
        self._size += len(body)
        if self._size > self.server.limit:
            self._refused = True
            self._answer_now(witness_views.too_large(self.server.limit), close=True)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head = 0
        if self._refused or self.closing:
            return
        close = not self.parser.should_keep_alive() or self.server._stopping
        entry: list = [None, close]
        self.owed.append(entry)
        self.server.busy += 1
        if close:
            self.closing = True
        else:
            self._flow()
        self.server.submit(b"".join(self._body), lambda got: self._reply(entry, got))

    # answers

    def stop(self) -> None:
        """The server stops: no more requests; close once the answers owed are written."""
        if not self.closing:
            self.closing = True
            if self.owed:
                self.owed[-1][1] = True
            else:
                self.transport.close()

    def _fail(self, status: int, detail: bytes) -> None:
        self._answer_now(witness_views.Answer(status, _TEXT, detail), close=True)

    def _answer_now(self, got: witness_views.Answer, close: bool) -> None:
        self.owed.append([self.server.encode(got, close), close])
        self.closing = self.closing or close
        self._write()

    def _reply(self, entry: list, got: witness_views.Answer) -> None:
        self.server.busy -= 1
        entry[0] = self.server.encode(got, entry[1])
        self._write()

    def _write(self) -> None:
        owed, transport = self.owed, self.transport
        while owed and owed[0][0] is not None:
            data, close = owed.popleft()
            if transport.is_closing():
                continue
            transport.write(data)
            if close:
                self.closing = True
                transport.close()
        self._flow()

    def _flow(self) -> None:
        """Read while the answers owed are few and the client takes what is written."""
        want = self.writable and len(self.owed) < _MAX_QUEUED and not self.transport.is_closing()
        if want != self.reading:
            self.reading = want
            with contextlib.suppress(RuntimeError):  # already closing
                if want:
                    self.transport.resume_reading()
                else:
                    self.transport.pause_reading()


_STATUSES = {s.value for s in HTTPStatus}


def _decide_in_thread(prepared: witness.Prepared) -> witness_views.Answer:
    close_old_connections()
    try:
        return witness_views.decide(prepared)
    except Exception:
        log.exception("add-checkpoint failed")
        connections.close_all()
        return _unavailable()


def _result(future: asyncio.Future) -> witness_views.Answer:
    if future.cancelled() or future.exception() is not None:
        return _unavailable()
    return future.result()


def _unavailable() -> witness_views.Answer:
    return witness_views.Answer(503, _TEXT, b"the witness could not answer; try again\n")


def _security_headers() -> list[tuple[str, str]]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to every answer."""
    from ledger.witness_wsgi import _security_headers as headers

    return headers()


def run(host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting, answer what is in flight, and exit.

    ``workers`` > 1: that many processes share the listening socket, each with its own batches
    and database connection (their swaps are compare-and-swaps on the same rows)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    if workers <= 1:
        _serve(sock)
        return
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _serve(sock)
            except BaseException:
                log.exception("witness server worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()

    stopping = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while children:
        pid, status = os.wait()
        if pid in children:
            children.remove(pid)
            code = os.waitstatus_to_exitcode(status)
            # A second SIGTERM (the process group's and the one forwarded) may find a worker
            # past its event loop: ended by the signal while stopping, which is a clean stop.
            if code != 0 and not (stopping and code == -signal.SIGTERM):
                failed = True
                if children:
                    forward(signal.SIGTERM, None)  # a worker down: stop, the supervisor restarts
    if failed:
        sys.exit(1)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = WitnessServer()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve(sock)

    asyncio.run(main())
