"""A dedicated witness server: C2SP tlog-witness ``POST /add-checkpoint`` in one asyncio process,
with a group commit.

``manage.py witness_serve --bind 127.0.0.1:PORT`` runs it beside the node's app (a reverse
proxy routes the node's ``/add-checkpoint`` to it; docs/consortium.md). HTTP/1.1 is parsed by
``h11``; the answers are :mod:`ledger.witness_views`' (the parsing, the log's signature and the
refusals are that module's and :mod:`ledger.witness`'s), so status, content type and body are
the ones the Django view gives.

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
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import h11
import psycopg
from django.conf import settings
from django.db import close_old_connections, connections
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from ledger import conf, witness, witness_views

log = logging.getLogger(__name__)

PATH = b"/add-checkpoint"
_READ_SIZE = 65536
_MAX_HEADERS = 16 * 1024
_TEXT = "text/plain; charset=utf-8"
STOP_TIMEOUT_S = 10.0
COMMITS_IN_FLIGHT = 2  # batches in the database at once, each on its own connection

# One statement: every log's compare-and-swap of the batch (at most one request per log).
_BATCH = """
WITH req AS (
    SELECT * FROM unnest(
        %(origin)s::text[], %(exists)s::bool[], %(old_size)s::bigint[], %(old_root)s::bytea[],
        %(size)s::bigint[], %(root)s::bytea[], %(note)s::text[]
    ) AS r(origin, prior, old_size, old_root, size, root, note)
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


@dataclass
class _Slot:
    db: psycopg.AsyncConnection | None = None


@dataclass
class _Pending:
    prepared: witness.Prepared
    start: tuple[bool, int, bytes]  # (row exists, size, root) the swap starts from
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def connection_params(alias: str = "default") -> dict[str, Any]:
    """psycopg's connection keywords for Django's database ``alias`` (its settings_dict, as
    Django itself connects), without Django's own cursor class and adapters."""
    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context", "server_side_binding"):
        params.pop(key, None)
    return params


class WitnessServer:
    """The server: ``await serve(host, port)`` until ``stop()``."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.limit = conf.witness_max_body()
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = [_Slot() for _ in range(COMMITS_IN_FLIGHT)]
        self._in_flight: set[str] = set()  # origins of the batches in the database
        # Django's ORM (the read-and-decide path, fork evidence) in one thread of its own.
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="witness-decide")
        self._headers = _security_headers()
        self._hosts: dict[bytes, bool] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._busy = 0  # requests read and not yet answered
        self.batches = 0
        self.swaps = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def serve(self, sock: socket.socket) -> None:
        """Answer on the listening ``sock`` until :meth:`stop`."""
        server = await asyncio.start_server(self._client, sock=sock)
        batcher = asyncio.create_task(self._batcher())
        try:
            await self._stopping.wait()
        finally:
            server.close()  # no new connections; the requests in flight are answered first
            await server.wait_closed()
            for _ in range(int(STOP_TIMEOUT_S * 20)):
                if not self._busy:
                    break
                await asyncio.sleep(0.05)
            for writer in list(self._writers):
                writer.close()
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher
            for item in self._queue:
                if not item.done.done():
                    item.done.set_result(_unavailable())
            for slot in self._slots:
                if slot.db is not None:
                    await slot.db.close()
            self._slow.shutdown(wait=True)

    def stop(self) -> None:
        self._stopping.set()

    # --- HTTP -------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADERS)
        self._writers.add(writer)
        try:
            while not self._stopping.is_set():
                keep = await self._exchange(conn, reader, writer)
                if not keep:
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if conn.they_are_waiting_for_100_continue:
                pass  # answered with the final status: the client sends the body or gives up
            conn.receive_data(await reader.read(_READ_SIZE))

    async def _exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """One request and its answer; False when the connection is to be closed."""
        try:
            event = await self._next(conn, reader)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                got = witness_views.Answer(
                    exc.error_status_hint, _TEXT, b"malformed HTTP request\n"
                )
                await self._send(conn, writer, got, close=True)
            return False
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Request):
            return False
        self._busy += 1
        try:
            got = await self._route(conn, reader, event)
            close = conn.their_state is not h11.DONE or self._stopping.is_set()
            await self._send(conn, writer, got, close=close)
        finally:
            self._busy -= 1
        return not close and conn.our_state is h11.DONE

    async def _route(
        self, conn: h11.Connection, reader: asyncio.StreamReader, request: h11.Request
    ) -> witness_views.Answer:
        target = request.target.split(b"?", 1)[0]
        if target != PATH:
            return witness_views.Answer(404, _TEXT, b"not found\n")
        if request.method != b"POST":
            return witness_views.Answer(405, _TEXT, b"add-checkpoint takes a POST\n")
        if not conf.witness_name():
            return witness_views.Answer(404, _TEXT, b"this node does not act as a witness\n")
        host = next((v for k, v in request.headers if k == b"host"), b"")
        if not self._host_allowed(host):
            return witness_views.Answer(400, _TEXT, b"this host is not allowed\n")
        declared = next((v for k, v in request.headers if k == b"content-length"), None)
        if declared is not None and int(declared) > self.limit:
            return witness_views.too_large(self.limit)
        body = await self._body(conn, reader)
        if body is None:
            return witness_views.too_large(self.limit)
        return await self._answer(body)

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        """The request body, or None once it is above the limit (read no further)."""
        chunks, size = [], 0
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limit:
                    return None
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # the client closed mid-body
                raise ConnectionError("the request body was cut short")

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        got: witness_views.Answer,
        close: bool,
    ) -> None:
        headers = [
            ("Content-Type", got.content_type),
            ("Content-Length", str(len(got.body))),
            ("Cache-Control", "no-store"),
            *self._headers,
        ]
        if got.status == 405:
            headers.append(("Allow", "POST"))
        if close:
            headers.append(("Connection", "close"))
        data = conn.send(h11.Response(status_code=got.status, headers=headers))
        data += conn.send(h11.Data(data=got.body)) + conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()

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

    async def _answer(self, body: bytes) -> witness_views.Answer:
        prepared = witness_views.prepare(body)
        if isinstance(prepared, witness_views.Answer):
            return prepared
        start = witness.swap_from(prepared)
        if start is None:
            return await self._decide(prepared)
        item = _Pending(prepared, start)
        self._queue.append(item)
        self._wake.set()
        return await item.done

    async def _decide(self, prepared: witness.Prepared) -> witness_views.Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._slow, _decide_in_thread, prepared)

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
            for item in batch:
                prepared = item.prepared
                if prepared.checkpoint.origin in moved:  # committed: now it may be cosigned
                    witness.swapped(prepared)
                    got = witness_views.cosigned(witness.cosign_prepared(prepared))
                    item.done.set_result(got)
                else:  # the row is not what the request leads from: read it and decide
                    task = asyncio.ensure_future(self._decide(prepared))
                    task.add_done_callback(lambda t, item=item: _chain(t, item.done))
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
        cols: dict[str, list] = {
            k: [] for k in ("origin", "exists", "old_size", "old_root", "size", "root", "note")
        }
        for item in batch:
            cp, (exists, old_size, old_root) = item.prepared.checkpoint, item.start
            cols["origin"].append(cp.origin)
            cols["exists"].append(exists)
            cols["old_size"].append(old_size)
            cols["old_root"].append(old_root)
            cols["size"].append(cp.size)
            cols["root"].append(cp.root_hash)
            cols["note"].append(item.prepared.note_text)
        params = {**cols, "witness": batch[0].prepared.witness, "now": timezone.now()}
        cursor = await slot.db.execute(_BATCH, params, prepare=True)
        return {row[0] for row in await cursor.fetchall()}


def _decide_in_thread(prepared: witness.Prepared) -> witness_views.Answer:
    close_old_connections()
    try:
        return witness_views.decide(prepared)
    except Exception:
        log.exception("add-checkpoint failed")
        connections.close_all()
        return _unavailable()


def _chain(task: asyncio.Future, done: asyncio.Future) -> None:
    if done.done():
        return
    if task.cancelled() or task.exception() is not None:
        done.set_result(_unavailable())
    else:
        done.set_result(task.result())


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
