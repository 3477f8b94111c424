"""C2SP tlog-witness over HTTP: this node's add-checkpoint endpoint, and the operator's client."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from ledger import keys, merkle, mirror_http, note, services, tlog_witness, witness, witness_client
from ledger.checkpoint import Checkpoint
from ledger.models import Member, MemberKey, WitnessState
from tests.ledger.helpers import init_ledger, signed_anchor

URLS = "tests.consortium.urls"
ORIGIN = "log.example/http"
WITNESS = "witness-http.example"


def _tree(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


@pytest.fixture
def log_key() -> tuple[str, str]:
    return note.generate_key(ORIGIN)


@pytest.fixture
def witness_key(settings, monkeypatch, log_key) -> tuple[str, str]:
    """This node acts as the witness WITNESS and follows the log ORIGIN."""
    signer, verifier = note.generate_cosigner_key(WITNESS)
    monkeypatch.setenv("LEDGER_WITNESS_KEY_WITNESS_HTTP_EXAMPLE", signer)
    settings.LEDGER_WITNESS_NAME = WITNESS
    settings.LEDGER_WITNESS_LOGS = {ORIGIN: log_key[1]}
    return signer, verifier


def _note(log_key, leaves: list[bytes], origin: str = ORIGIN) -> str:
    return note.sign(Checkpoint(origin, len(leaves), merkle.root_hash(leaves)).body(), log_key[0])


def _post(client: Client, body: bytes):
    return client.post("/add-checkpoint", data=body, content_type="text/plain")


pytestmark = [pytest.mark.urls(URLS)]


# --- the witness endpoint ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_witness_cosigns_then_answers_409_with_its_size(client, log_key, witness_key):
    leaves = _tree(20)
    first = _note(log_key, leaves[:7])
    ok = _post(client, tlog_witness.format_request(0, [], first))
    assert ok.status_code == 200
    assert ok["Content-Type"] == tlog_witness.COSIGNATURE_CONTENT_TYPE
    lines = tlog_witness.parse_cosignatures(ok.content)
    assert note.verify_cosignature(note.add_signatures(first, lines), [witness_key[1]]).keys() == {
        WITNESS
    }
    # The operator lost track: the witness says where it is, exactly as the spec writes it.
    again = _post(client, tlog_witness.format_request(0, [], _note(log_key, leaves)))
    assert again.status_code == 409
    assert again["Content-Type"] == "text/x.tlog.size"
    assert again.content == b"7\n"
    proof = merkle.consistency_proof(7, leaves)
    assert (
        _post(client, tlog_witness.format_request(7, proof, _note(log_key, leaves))).status_code
        == 200
    )
    assert WitnessState.objects.get(witness=WITNESS).size == 20


@pytest.mark.django_db
def test_the_witness_answers_each_refusal_with_the_specs_status(client, log_key, witness_key):
    leaves = _tree(10)
    assert (
        _post(client, tlog_witness.format_request(0, [], _note(log_key, leaves[:4]))).status_code
        == 200
    )
    good = merkle.consistency_proof(4, leaves)

    def status(old: int, proof: list[bytes], text: str) -> int:
        return _post(client, tlog_witness.format_request(old, proof, text)).status_code

    other_log = note.generate_key("other.example")
    assert status(4, good, _note(other_log, leaves, origin="other.example")) == 404
    assert status(4, good, _note(note.generate_key(ORIGIN), leaves)) == 403
    assert status(11, good, _note(log_key, leaves)) == 400
    assert status(4, [bytes(32)] * len(good), _note(log_key, leaves)) == 422
    assert status(3, good, _note(log_key, leaves)) == 409
    assert status(4, [], _note(log_key, _tree(4, salt=b"fork"))) == 409  # a split view
    assert WitnessState.objects.get(witness=WITNESS).size == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 1\n",
        b"old 01\n\n{note}",
        b"old -1\n\n{note}",
        b"old 1 \n\n{note}",
        b"Old 1\n\n{note}",
        b"old 1\nnot base64!\n\n{note}",
        b"old 1\nAAAA\n\n{note}",  # base64, but not 32 bytes
        b"old 1\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\n{note}",
        b"old 0\n\nnot a checkpoint\n",
        b"old 0\n\n\xff\xfe{note}",
        b"old 0\n\n",
        b"old 0\n{note}",
    ],
)
def test_malformed_requests_are_400(client, log_key, witness_key, body):
    text = _note(log_key, _tree(3)).encode()
    response = _post(client, body.replace(b"{note}", text))
    assert response.status_code == 400
    assert not WitnessState.objects.exists()


@pytest.mark.django_db
def test_size_limit_method_and_a_node_that_is_no_witness(client, settings, log_key, witness_key):
    settings.LEDGER_WITNESS_MAX_BODY = 1000
    big = tlog_witness.format_request(0, [], _note(log_key, _tree(3))) + b"x" * 1000
    assert _post(client, big).status_code == 413
    assert client.get("/add-checkpoint").status_code == 405
    settings.LEDGER_WITNESS_NAME = ""
    assert (
        _post(client, tlog_witness.format_request(0, [], _note(log_key, _tree(3)))).status_code
        == 404
    )


# --- the operator's client (no network) ---------------------------------------------------------


def _answers(*answers):
    """A ``send`` that plays ``answers`` (an Answer, or an exception to raise) in order."""
    calls = []

    def send(url, body, timeout):
        calls.append((url, body, timeout))
        answer = answers[len(calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return send, calls


def _ask(send, sleeps: list[float] | None = None, retries: int = 2) -> list[str]:
    return witness_client.request_cosignatures(
        "http://w.example/prefix/",
        old_size=3,
        proof=[bytes(32)],
        note_text="log\n3\n" + base64.b64encode(bytes(32)).decode() + "\n\n— log AAAAAAAA\n",
        timeout=0.5,
        retries=retries,
        backoff=0.1,
        sleep=(sleeps if sleeps is not None else []).append,
        send=send,
    )


def test_faults_and_5xx_are_retried_with_backoff_then_answered():
    line = "— w.example AAAAAQ==\n"
    send, calls = _answers(
        TimeoutError("timed out"),
        witness_client.Answer(503, "text/plain", b"busy"),
        witness_client.Answer(200, "text/plain", line.encode()),
    )
    sleeps: list[float] = []
    assert _ask(send, sleeps) == [line]
    assert sleeps == [0.1, 0.2]
    assert calls[0][0] == "http://w.example/prefix/add-checkpoint"
    assert calls[0][1].startswith(b"old 3\n" + base64.b64encode(bytes(32)) + b"\n\nlog\n3\n")
    assert calls[0][2] == 0.5


def test_a_witness_that_never_answers_well_is_unavailable_after_bounded_attempts():
    send, calls = _answers(
        ConnectionRefusedError("refused"),
        witness_client.Answer(200, "text/plain", b"not a signature line\n"),
        witness_client.Answer(502, "text/html", b"<html>"),
    )
    with pytest.raises(witness_client.WitnessUnavailable, match="3 attempts"):
        _ask(send)
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("status", "body", "refusal", "size"),
    [
        (409, b"17\n", witness.SizeConflict, 17),
        (409, b"seventeen", witness.SizeConflict, None),
        (404, b"unknown log", witness.UnknownLog, None),
        (403, b"", witness.NotSigned, None),
        (400, b"", witness.BadOldSize, None),
        (422, b"", witness.BadProof, None),
    ],
)
def test_refusals_map_to_the_witness_exceptions_without_retrying(status, body, refusal, size):
    send, calls = _answers(witness_client.Answer(status, tlog_witness.SIZE_CONTENT_TYPE, body))
    with pytest.raises(refusal) as raised:
        _ask(send)
    assert raised.value.size == size
    assert len(calls) == 1


# --- the operator asking witnesses over HTTP -----------------------------------------------------


@pytest.fixture
def http_acme(settings, live_server, transactional_db) -> str:
    """This node runs the log and, over HTTP through its live server, acme's witness."""
    init_ledger()
    name = "acme-insurance.example"
    Member.objects.filter(name=name).update(witness_url=live_server.url + "/")
    settings.LEDGER_WITNESS_NAME = name
    settings.LEDGER_WITNESS_LOGS = {settings.LEDGER_ORIGIN: keys.operator_verifier_key()}
    return name


def _spy(monkeypatch) -> list[bytes]:
    sent: list[bytes] = []
    post = witness_client.post

    def spying(url, body, timeout):
        sent.append(body)
        return post(url, body, timeout)

    monkeypatch.setattr(witness_client, "post", spying)
    return sent


def test_the_operator_gets_a_cosignature_over_http_and_catches_a_witness_up(http_acme, monkeypatch):
    sent = _spy(monkeypatch)
    services.anchor_append_many(datas=[signed_anchor(i) for i in range(3)])
    cp3 = services.ledger_seal()
    # The witness hears of size 3 from someone else: the operator's view of it is stale.
    answer = Client().post(
        "/add-checkpoint",
        data=tlog_witness.format_request(0, [], cp3.note),
        content_type="text/plain",
    )
    assert answer.status_code == 200
    services.anchor_append_many(datas=[signed_anchor(i) for i in range(3, 7)])
    cp7 = services.ledger_seal()
    outcomes = services.checkpoint_cosign(checkpoint=cp7)
    assert outcomes[http_acme] == "cosigned"
    assert [body.split(b"\n", 1)[0] for body in sent] == [b"old 0", b"old 3"]  # 409, then proof
    assert cp7.cosignatures.filter(member__name=http_acme).exists()
    assert services.checkpoint_is_final(cp7)
    assert WitnessState.objects.get(witness=http_acme).size == 7


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    delay = 30.0  # far beyond any timeout: only a client that gives up returns quickly

    def do_POST(self):
        time.sleep(self.delay)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _GarbledHandler(http.server.BaseHTTPRequestHandler):
    """Answers at once, 200, with something that is no cosignature line."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>a captive portal</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def garbled_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbledHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.django_db
def test_slow_dead_and_garbled_witnesses_never_hold_up_the_others(
    settings, slow_server, garbled_server
):
    settings.LEDGER_QUORUM = 1
    settings.LEDGER_WITNESS_TIMEOUT_S = 0.3
    settings.LEDGER_WITNESS_RETRIES = 1
    settings.LEDGER_WITNESS_BACKOFF_S = 0.05
    init_ledger()
    Member.objects.filter(name="northlab.example").update(witness_url=slow_server)
    Member.objects.filter(name="stmarys.example").update(witness_url=_closed_port())
    garbled = Member.objects.create(name="garbled.example", witness_url=garbled_server)
    verifier = note.generate_cosigner_key("garbled.example")[1]
    MemberKey.objects.create(
        member=garbled,
        purpose=MemberKey.Purpose.COSIGN,
        verifier_key=verifier,
        key_id=f"{note.parse_verifier_key(verifier).key_id:08x}",
    )
    services.anchor_append_many(datas=[signed_anchor(i) for i in range(4)])
    cp = services.ledger_seal()
    started = time.monotonic()
    outcomes = services.checkpoint_cosign(checkpoint=cp)
    elapsed = time.monotonic() - started
    assert outcomes["acme-insurance.example"] == "cosigned"
    assert outcomes["northlab.example"].startswith("refused: ")
    assert "2 attempts" in outcomes["stmarys.example"]
    assert "malformed answer" in outcomes["garbled.example"]
    assert "2 attempts" in outcomes["garbled.example"]
    assert services.checkpoint_is_final(cp)
    # Each witness is given 2 x 0.3 s plus backoff; a client that waited for the slow one would
    # take 30 s or more. The margin is wide on purpose: this is not a speed test.
    assert elapsed < 10


# --- keep-alive: one connection per witness -------------------------------------------------------


class _KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[socket.socket] = []

    def setup(self):
        super().setup()
        self.connections.append(self.connection)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = "\u2014 w.example AAAAAQ==\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_operator_keeps_one_connection_per_witness_and_survives_an_idle_close():
    _KeepAliveHandler.connections = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(5):
            lines = witness_client.request_cosignatures(
                url, old_size=0, proof=[], note_text="log\n0\nx\n", timeout=5, retries=0, backoff=0
            )
            assert lines == ["\u2014 w.example AAAAAQ==\n"]
        assert len(_KeepAliveHandler.connections) == 1  # five requests, one connection
        # The witness closes the idle connection (its keep-alive timeout): the next request
        # is sent again on a new connection, not reported as a fault.
        _KeepAliveHandler.connections[0].shutdown(socket.SHUT_RDWR)
        lines = witness_client.request_cosignatures(
            url, old_size=0, proof=[], note_text="log\n0\nx\n", timeout=5, retries=0, backoff=0
        )
        assert lines == ["\u2014 w.example AAAAAQ==\n"]
        assert len(_KeepAliveHandler.connections) == 2
    finally:
        server.shutdown()
        server.server_close()
        mirror_http.POOL.close()
