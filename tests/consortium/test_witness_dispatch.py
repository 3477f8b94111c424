"""POST /add-checkpoint as a real witness node process answers it (ledger/witness_wsgi.py, in front
of Django), over real HTTP on 127.0.0.1. Every answer C2SP tlog-witness documents is checked on
this transport and on the dedicated witness server by one test
(tests/consortium/test_witness_server.py, ``test_each_answer_of_the_protocol``); the helpers
here are shared with it."""

from __future__ import annotations

import http.client
import itertools
import threading

import pytest

from ledger import merkle, note, tlog_witness
from ledger.checkpoint import Checkpoint
from tests.consortium.conftest import WitnessNode

pytestmark = pytest.mark.postgres

ORIGIN = "dispatch-log.example"
_names = itertools.count(1)


def _tree(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


@pytest.fixture
def log_key():
    return note.generate_key(ORIGIN)


@pytest.fixture
def node(node_database, witness_nodes, log_key):
    name = f"dispatch-{next(_names)}.example"
    signer, verifier = note.generate_cosigner_key(name)
    node = WitnessNode(
        database_url=node_database,
        name=name,
        signer_key=signer,
        logs={ORIGIN: log_key[1], "other-log.example": note.generate_key("other-log.example")[1]},
    )
    witness_nodes.append(node)
    node.start()
    node.verifier = verifier
    return node


def _note(signer: str, leaves: list[bytes], origin: str = ORIGIN) -> str:
    return note.sign(Checkpoint(origin, len(leaves), merkle.root_hash(leaves)).body(), signer)


def _body(old: int, leaves: list[bytes], signer: str, proof: list[bytes] | None = None) -> bytes:
    if proof is None:
        proof = merkle.consistency_proof(old, leaves) if old else []
    return tlog_witness.format_request(old, proof, _note(signer, leaves))


def _send(node, body, method: str = "POST", path: str = "/add-checkpoint", **kw):
    """One request to ``node`` (anything with a ``port``: a witness node, the witness server)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=kw.pop("headers", {}), **kw)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_oversize_bodies_wrong_methods_hosts_and_paths(node, log_key):
    big = b"old 0\n" + b"A" * 70_000
    status, _headers, body = _send(node, big)
    assert status == 413 and b"at most 65536 bytes" in body
    status, _headers, body = _send(
        node,
        iter([big[:30_000], big[30_000:]]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 413

    # Not the witness's hot path: Django answers, as it did before.
    for method in ("GET", "PUT", "DELETE"):
        status, headers, _answer = _send(node, b"" if method != "GET" else None, method=method)
        assert status == 405 and headers["Allow"] == "POST"
    request = _body(0, _tree(3), log_key[0])
    status, _headers, _answer = _send(node, request, headers={"Host": "evil.example"})
    assert status == 400
    status, _headers, _answer = _send(node, request, path="/add-checkpoint/")
    assert status == 404
    # And none of those cosigned anything: a first checkpoint is still taken from size 0.
    assert _send(node, request)[0] == 200


def forks_sent_at_once(target, signer: str) -> list[list[bytes]]:
    """Sixteen trees of size 11 extending what ``target`` (a witness answering ``_send``)
    cosigned at size 6, each with a valid proof, sent at once: exactly one is cosigned, the
    others get 409 with the size cosigned. Returns the forks' leaves."""
    base = _tree(6)
    assert _send(target, _body(0, base, signer))[0] == 200
    forks = [base + _tree(5, b"fork %d" % k) for k in range(16)]
    bodies = [_body(6, leaves, signer) for leaves in forks]
    answers: list[tuple[int, bytes]] = []
    barrier = threading.Barrier(len(bodies))

    def send(body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=15)
        conn.connect()
        barrier.wait()
        conn.request("POST", "/add-checkpoint", body=body)
        response = conn.getresponse()
        answers.append((response.status, response.read()))
        conn.close()

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 15, answers
    assert all(body == b"11\n" for status, body in answers if status == 409)
    return forks


def only_one_fork_extends(target, signer: str, forks: list[list[bytes]]) -> None:
    """After a restart the witness still holds size 11, and exactly one of ``forks``: only
    that one extends (the forks before it are refused as inconsistent, those after as late)."""
    status, _headers, body = _send(target, _body(0, _tree(12, b"late"), signer))
    assert (status, body) == (409, b"11\n")
    extended = [_send(target, _body(11, leaves + _tree(1, b"next"), signer))[0] for leaves in forks]
    assert extended.count(200) == 1, extended
    first = extended.index(200)
    assert set(extended[:first]) <= {422} and set(extended[first + 1 :]) <= {409}


def test_concurrent_requests_never_cosign_two_trees_of_one_size(node, log_key):
    """Sixteen forks of one size sent at once to a node of two worker processes: exactly one is
    cosigned, and what it cosigned survives a restart as one whole fork."""
    signer = log_key[0]
    forks = forks_sent_at_once(node, signer)
    node.stop()
    node.start()
    only_one_fork_extends(node, signer, forks)
