"""The dedicated witness server (ledger/witness_server.py, ``manage.py witness_serve``) as a real
process on 127.0.0.1 over a real PostgreSQL: the answers the protocol documents, checked on it
and on the node's own endpoint (gunicorn, ledger/witness_wsgi.py) by the same tests, and the
group commit never cosigns two trees of one size."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ledger import merkle, note, tlog_witness
from ledger.keys import witness_key_env
from ledger.models import ForkEvidence
from tests.consortium.conftest import ROOT, START_TIMEOUT_S, WitnessNode, _base_env, free_port
from tests.consortium.test_witness_dispatch import (
    _body,
    _note,
    _send,
    _tree,
    forks_sent_at_once,
    only_one_fork_extends,
)

pytestmark = pytest.mark.postgres

ORIGIN = "dispatch-log.example"  # the helpers' log
_names = itertools.count(1)


@dataclass
class ServerProcess:
    """``manage.py witness_serve`` on a port of its own: start() / stop() as often as needed."""

    database_url: str
    name: str
    signer_key: str
    logs: dict[str, str]
    workers: int = 1
    port: int = field(default_factory=free_port)
    var: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="claimproof-wserver-"))
    process: subprocess.Popen | None = None

    def start(self) -> None:
        env = _base_env(self.var)
        env.update(
            DATABASE_URL=self.database_url,
            LEDGER_WITNESS_NAME=self.name,
            LEDGER_WITNESS_LOGS=json.dumps(self.logs),
        )
        env[witness_key_env(self.name)] = self.signer_key
        with open(Path(self.var) / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "manage.py", "witness_serve"),
                    *("--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the witness server exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/add-checkpoint", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 405:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the witness server did not start")

    def stop(self) -> int | None:
        """SIGTERM; the exit status (None if it had to be killed)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return None

    def log_tail(self) -> str:
        path = Path(self.var) / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def log_key():
    return note.generate_key(ORIGIN)


@pytest.fixture
def server(request, node_database, log_key):
    name = f"wserver-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    other = note.generate_key("other-log.example")[1]
    logs = {ORIGIN: log_key[1], "other-log.example": other}
    workers = getattr(request, "param", 1)
    proc = ServerProcess(node_database, name, signer, logs, workers=workers)
    proc.start()
    proc.verifier = verifier
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log_tail()


@pytest.fixture(params=["gunicorn", "server"], ids=["gunicorn fast path", "dedicated server"])
def endpoint(request, node_database, witness_nodes, log_key):
    """The witness over either transport, which must answer alike: a node process (gunicorn,
    ledger/witness_wsgi.py in front of Django) or the dedicated server."""
    name = f"wserver-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    logs = {ORIGIN: log_key[1], "other-log.example": note.generate_key("other-log.example")[1]}
    if request.param == "gunicorn":
        node = WitnessNode(database_url=node_database, name=name, signer_key=signer, logs=logs)
        witness_nodes.append(node)  # stopped by that fixture
        node.start()
        node.verifier = verifier
        yield node
        return
    proc = ServerProcess(node_database, name, signer, logs)
    proc.start()
    proc.verifier = verifier
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_each_answer_of_the_protocol(endpoint, log_key):
    signer = log_key[0]
    leaves = _tree(30)

    status, headers, body = _send(endpoint, _body(0, leaves[:5], signer))
    assert status == 200, endpoint.log_tail()
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    cosigned = note.add_signatures(_note(signer, leaves[:5]), tlog_witness.parse_cosignatures(body))
    assert endpoint.name in note.verify_cosignature(cosigned, [endpoint.verifier])

    # A stale old size: 409, the size it cosigned, as text/x.tlog.size.
    status, headers, body = _send(endpoint, _body(0, leaves[:8], signer))
    assert (status, headers["Content-Type"], body) == (409, "text/x.tlog.size", b"5\n")
    # Another tree of the size it cosigned: 409 too, with that size.
    status, _headers, body = _send(endpoint, _body(0, _tree(5, b"fork"), signer))
    assert (status, body) == (409, b"5\n")
    # A proof that does not lead from what it cosigned: 422, kept as fork evidence.
    bad = merkle.consistency_proof(5, _tree(8, b"other"))
    status, headers, body = _send(endpoint, _body(5, leaves[:8], signer, proof=bad))
    assert status == 422 and headers["Content-Type"] == "text/plain; charset=utf-8", body
    assert b"consistency proof does not hold" in body
    # Signed by a key of the same name that the witness does not trust: 403.
    stranger = note.generate_key(ORIGIN)[0]
    assert _send(endpoint, _body(5, leaves[:8], stranger))[0] == 403
    # A log it does not follow: 404.
    unknown = note.generate_key("unknown-log.example")[0]
    body = tlog_witness.format_request(0, [], _note(unknown, leaves[:3], "unknown-log.example"))
    assert _send(endpoint, body)[0] == 404
    # An old size above the checkpoint's: 400.
    assert _send(endpoint, tlog_witness.format_request(9, [], _note(signer, leaves[:8])))[0] == 400

    # None of those moved it: the next checkpoint from 5 is cosigned, sent chunked this time,
    # and then a power-of-two old size (the proof does not name the old root).
    request = _body(5, leaves[:8], signer)
    status, _headers, body = _send(
        endpoint,
        iter([request[:40], request[40:]]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 200, body
    assert _send(endpoint, _body(8, leaves[:12], signer))[0] == 200
    assert _send(endpoint, _body(5, leaves[:13], signer))[2] == b"12\n"

    # Several requests on one keep-alive connection.
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=15)
    try:
        for size in (13, 14, 15):
            conn.request("POST", "/add-checkpoint", body=_body(size - 1, leaves[:size], signer))
            response = conn.getresponse()
            assert (response.status, response.read()[:4]) == (200, "— ".encode())
    finally:
        conn.close()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"old 0\n",  # no empty line, no checkpoint
        b"old 01\n\nlog\n1\nAAAA\n",  # a leading zero
        b"new 0\n\nlog\n",
        b"old 0\nnot base64!\n\n" + b"x\n",
        b"old 0\n\nnot a checkpoint\n\n\xe2\x80\x94 x AAAA\n",
    ],
)
def test_malformed_bodies_are_400(endpoint, body):
    status, headers, answer = _send(endpoint, body)
    assert status == 400, answer
    assert answer.startswith(b"malformed add-checkpoint request")
    assert headers["Cache-Control"] == "no-store"


def test_oversize_bodies_other_methods_paths_and_hosts(server, log_key):
    big = b"old 0\n" + b"A" * 70_000
    status, _headers, body = _send(server, big)
    assert status == 413 and b"at most 65536 bytes" in body
    status, _headers, body = _send(
        server,
        iter([big[:30_000], big[30_000:]]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 413 and b"at most 65536 bytes" in body
    for method in ("GET", "PUT", "DELETE"):
        status, headers, _answer = _send(server, b"" if method != "GET" else None, method=method)
        assert status == 405 and headers["Allow"] == "POST"
    request = _body(0, _tree(3), log_key[0])
    for path in ("/add-checkpoint/", "/", "/api/v1/claims"):
        assert _send(server, request, path=path)[0] == 404
    assert _send(server, request, headers={"Host": "evil.example"})[0] == 400
    # A request that is not HTTP at all: 400, and the server goes on.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    conn.connect()
    conn.sock.sendall(b"NOT HTTP\r\n\r\n")
    assert conn.sock.recv(100).startswith(b"HTTP/1.1 400")
    conn.close()
    # None of those cosigned anything: a first checkpoint is still taken from size 0.
    assert _send(server, request)[0] == 200


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["1 process", "2 processes"])
def test_forks_sent_at_once_exactly_one_is_cosigned_and_it_survives_a_restart(server, log_key):
    """Sixteen trees of one size, each with a valid proof from what the witness cosigned, sent
    at once: one batch takes one of them, the rest get 409 with the size cosigned. With two
    processes each batches on its own: the compare-and-swap on the row decides."""
    signer = log_key[0]
    forks = forks_sent_at_once(server, signer)
    # What it cosigned survives a clean stop and a start, and is one whole fork.
    assert server.stop() == 0, server.log_tail()
    server.start()
    only_one_fork_extends(server, signer, forks)


@pytest.mark.parametrize("workers", [1, 2])
def test_many_logs_at_once_are_all_cosigned_in_order(node_database, workers):
    """Eight logs, each sending a chain of checkpoints on its own connection at once: every one
    is cosigned (batches hold several logs), and each log's state is its last checkpoint."""
    name = f"wserver-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    keys = {f"log-{k}.example": note.generate_key(f"log-{k}.example") for k in range(8)}
    logs = {o: k[1] for o, k in keys.items()}
    proc = ServerProcess(node_database, name, signer, logs, workers=workers)
    proc.start()
    try:
        leaves = _tree(40)
        results: dict[str, list[int]] = {}

        def run(origin: str) -> None:
            log_signer = keys[origin][0]
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=15)
            got, old = [], 0
            for size in (3, 7, 12, 20, 33, 40):
                proof = merkle.consistency_proof(old, leaves[:size]) if old else []
                text = _note(log_signer, leaves[:size], origin)
                conn.request(
                    "POST", "/add-checkpoint", body=tlog_witness.format_request(old, proof, text)
                )
                response = conn.getresponse()
                body = response.read()
                got.append(response.status)
                if response.status == 200:
                    cosigned = note.add_signatures(text, tlog_witness.parse_cosignatures(body))
                    assert name in note.verify_cosignature(cosigned, [verifier])
                old = size
            conn.close()
            results[origin] = got

        threads = [threading.Thread(target=run, args=(o,)) for o in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {o: [200] * 6 for o in keys}, proc.log_tail()
        for origin, (log_signer, _v) in keys.items():
            late = tlog_witness.format_request(0, [], _note(log_signer, leaves[:2], origin))
            assert _send(proc, late)[2] == b"40\n"
    finally:
        assert proc.stop() == 0, proc.log_tail()


def test_a_split_view_is_kept_as_fork_evidence(server, log_key, node_database):
    """The refusal path is the node's own: a second tree of a cosigned size is fork evidence in
    the witness's database."""
    import psycopg

    signer = log_key[0]
    assert _send(server, _body(0, _tree(7), signer))[0] == 200
    assert _send(server, _body(0, _tree(7, b"fork"), signer))[:1] == (409,)
    with psycopg.connect(node_database) as conn:
        kinds = [
            row[0]
            for row in conn.execute(
                "SELECT kind FROM ledger_forkevidence WHERE witness = %s", [server.name]
            )
        ]
    assert kinds == [ForkEvidence.Kind.SPLIT_VIEW]
