"""Benchmark 5: a witness's add-checkpoint over HTTP against raw Ed25519 sign + verify; the time
from sealing to a final checkpoint with 3 and 7 witnesses.

(a) A real node serves ``POST /add-checkpoint`` (gunicorn on 127.0.0.1, ``config.wsgi``, shaped as
compose.yaml's web service: 4 workers x 4 threads, keep-alive, on the bench database) as the
witness ``bench-witness.example`` following ``CHAINS`` (16) logs of its own: a witness serves many
logs. Every log's checkpoints are signed beforehand: a chain of growing sizes (1 to 8 leaves more
each time) with the consistency proof from the one before, so each request is a distinct
consistent checkpoint the witness must verify, check against its stored state, advance by
compare-and-swap (committed before it answers) and cosign. A separate load process sends them:
one keep-alive connection per log, one request in flight on each, multiplexed by one thread over
raw sockets (an ``http.client`` thread per log cost more CPU than the node). Every answer must be
200 with a cosignature line. The reference is one Ed25519 sign plus one verify (what a
cosignature costs: the log's signature checked, the witness's made) in this process, one core,
the faster of PyNaCl and cryptography. The same chains, load and reference measure the dedicated
witness server (``manage.py witness_serve``, ledger/witness_server.py: one asyncio process,
httptools, group commit) under a witness name of its own (its own state rows), in the
same rounds. Context rows: the HTTP floors (the same gunicorn shape and load, an app that
answers at once; the dedicated server's own connections answering at once, its witness work left
out), the dedicated server with ``--workers 2`` (under a third witness name), one log and one
connection (requests one after another), the witness's ``witness_add_checkpoint`` called in
process (no HTTP), and raw durable one-row commits: the witness answers a cosignature only once
its new state is committed (one ``UPDATE`` statement, flushed), so one log's requests in a row
cannot go faster than that row; requests of several logs in parallel share WAL flushes
(PostgreSQL's group commit).

(b) ``ledger_seal`` then ``checkpoint_cosign`` until ``checkpoint_is_final`` with every
witness required (quorum n), n = 3 and 7 witnesses hosted on this node, 16 anchors pending per
checkpoint; the reference is ``ledger_seal`` alone. The per-witness cost is (t7 - t3) / 4.

(c) As (b), with n = 3 and 7 witnesses that are node processes of their own (gunicorn, one
worker, two threads each, on the bench database under their own names), asked over HTTP in
parallel on keep-alive connections; the hosted witnesses are revoked meanwhile.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    QUICK,
    ROOT,
    Result,
    Row,
    Sizes,
    best,
    best_rates,
    durable_commits,
    fmt,
    spread,
    timed,
)

NAME = "witness"
TITLE = "5. Witness add-checkpoint over HTTP vs raw Ed25519 sign + verify; seal to final"
AIM = 0.3
WITNESS = "bench-witness.example"
SERVER_WITNESS = "bench-witness-server.example"  # the dedicated server: its own state rows
SERVER_WITNESS_2 = "bench-witness-server-2.example"  # the same with --workers 2: its own rows
CHAINS = 16  # logs sending checkpoints at once: a witness serves many logs
MAX_STEP = 8
START_TIMEOUT_S = 30.0


# --- pre-signed chains of checkpoints ------------------------------------------------------------


def _range_hash(nodes: dict[tuple[int, int], bytes], lo: int, hi: int) -> bytes:
    from ledger import merkle

    return merkle.fold([nodes[s] for s in merkle.range_subtrees(lo, hi)])


def chain(origin: str, log_signer: str, count: int, seed: int) -> list[bytes]:
    """``count`` add-checkpoint request bodies for one log, each extending the one before."""
    from ledger import merkle, note, tlog_witness
    from ledger.checkpoint import Checkpoint

    rng = random.Random(seed)
    sizes, size = [], 0
    for _ in range(count):
        size += rng.randint(1, MAX_STEP)
        sizes.append(size)
    created, _ = merkle.append_leaves(0, [], (rng.randbytes(32) for _ in range(sizes[-1])))
    nodes = {(lv, i): h for lv, i, h in created}
    bodies, old = [], 0
    for size in sizes:
        root = _range_hash(nodes, 0, size)
        proof = [
            _range_hash(nodes, lo, hi) for lo, hi in merkle.consistency_proof_ranges(old, size)
        ]
        text = note.sign(Checkpoint(origin, size, root).body(), log_signer)
        bodies.append(tlog_witness.format_request(old, proof, text))
        old = size
    return bodies


# --- the node and the load process ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """The witness node: gunicorn serving config.wsgi on the bench database."""

    def __init__(
        self,
        signer: str,
        logs: dict[str, str],
        workers: int,
        threads: int,
        name: str = WITNESS,
        wait: bool = True,
        app: str = "config.wsgi:application",
        path: str = "",
        command: list[str] | None = None,
    ):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="claimproof-wbench-")) / "gunicorn.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_WITNESS")}
        env.update(
            LEDGER_WITNESS_NAME=name,
            LEDGER_WITNESS_LOGS=json.dumps(logs),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), path) if p),
            LOG_LEVEL="WARNING",
        )
        from ledger.keys import witness_key_env

        env[witness_key_env(name)] = signer
        if command is None:
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                app,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--timeout",
                "60",
                "--graceful-timeout",
                "2",
                "--no-control-socket",  # gunicorn 27: else one shared socket path per user
                "--keep-alive",
                "30",
            ]
        else:
            command = [c.replace("{port}", str(self.port)) for c in command]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the witness node exited: {self.tail()}")
            try:
                urllib.request.urlopen(self.url + "/add-checkpoint", timeout=1)  # noqa: S310
            except urllib.error.HTTPError as exc:
                if exc.code == 405:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the witness node did not start in {START_TIMEOUT_S} s")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def load(port: int, chains: list[list[bytes]], path: str = "/add-checkpoint") -> dict[str, Any]:
    """Send every chain in order on its own keep-alive connection (one request in flight on
    each, as a log operator waits for a cosignature before it sends its next checkpoint), the
    chains in parallel; the wall time from the first request to the last answer. Runs in the
    load process.

    One thread multiplexes the connections (``selectors``) over raw sockets with the requests
    built beforehand: the load process shares the machine's cores with the node, and
    ``http.client`` in one thread per log cost it more CPU than the node's own request handling
    (a gunicorn answering at once, measured in the same way, topped out at about 1,850/s)."""
    import selectors
    import socket

    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n"
    )
    select = selectors.DefaultSelector()
    conns = []
    for bodies in chains:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        requests = [head.format(len(b)).encode("ascii") + b for b in bodies]
        conns.append({"sock": sock, "requests": requests, "next": 0, "buf": b""})
    failures: list[str] = []
    answered = 0
    start = time.perf_counter()
    live = 0
    for conn in conns:
        if conn["requests"]:
            conn["sock"].sendall(conn["requests"][0])
            select.register(conn["sock"], selectors.EVENT_READ, conn)
            live += 1
    while live:
        events = select.select(timeout=30)
        if not events:
            failures.append("no answer in 30 s")
            break
        for key, _events in events:
            conn = key.data
            data = conn["sock"].recv(65536)
            buf = conn["buf"] = conn["buf"] + data
            end = buf.find(b"\r\n\r\n")
            status, body = 0, b""
            if data and end >= 0:
                lines = buf[:end].split(b"\r\n")
                status = int(lines[0].split(b" ", 2)[1])
                length = next(
                    (int(h[15:]) for h in lines[1:] if h[:15].lower() == b"content-length:"), 0
                )
                if len(buf) < end + 4 + length:
                    continue
                body, conn["buf"] = buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
            elif data:
                continue
            if status != 200 or not body.startswith("\u2014 ".encode()):
                failures.append(f"{status or 'closed'}: {body[:200]!r}")
                select.unregister(conn["sock"])
                live -= 1
                continue
            answered += 1
            conn["next"] += 1
            if conn["next"] < len(conn["requests"]):
                conn["sock"].sendall(conn["requests"][conn["next"]])
            else:
                select.unregister(conn["sock"])
                live -= 1
    seconds = time.perf_counter() - start
    for conn in conns:
        conn["sock"].close()
    return {"seconds": seconds, "answered": answered, "failures": failures[:3]}


def _load_main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "rb") as f:
        chains = pickle.load(f)  # noqa: S301 (written by this benchmark a moment ago)
    print(json.dumps(load(port, chains)))


def _load_in_process(port: int, chains: list[list[bytes]]) -> int:
    """Run :func:`load` in a separate Python process; returns requests answered, raises on a
    refusal. The rate is taken from the child's own wall clock."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump(chains, f)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[3]); "
                "from bench.bench_witness import _load_main; _load_main()",
                str(port),
                f.name,
                str(ROOT),
            ],
            capture_output=True,
            check=True,
            timeout=600,
            text=True,
        )
    finally:
        os.unlink(f.name)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = sum(len(c) for c in chains)
    if got["failures"] or got["answered"] != expected:
        raise RuntimeError(f"the witness refused: {got['failures']} ({got['answered']}/{expected})")
    return got


# --- the reference -------------------------------------------------------------------------------


def compose_gunicorn() -> tuple[int, int]:
    """(workers, threads) of the web service in compose.yaml: the deployment's own shape."""
    import re

    text = (ROOT / "compose.yaml").read_text()
    workers = re.search(r"--workers[= ](\d+)", text)
    threads = re.search(r"--threads[= ](\d+)", text)
    if workers is None or threads is None:
        return os.cpu_count() or 2, 4
    return int(workers.group(1)), int(threads.group(1))


_FLOOR_APP = '''"""The HTTP floor: gunicorn and the load alone (written by bench_witness)."""


def application(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        start_response("405 Method Not Allowed", [("Content-Length", "0")])
        return [b""]
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = "\\u2014 floor AAAA\\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def floor_node(signer: str, workers: int, threads: int) -> Node:
    """gunicorn, shaped as the witness node, serving an app that answers at once."""
    folder = Path(tempfile.mkdtemp(prefix="claimproof-wbench-floor-"))
    (folder / "claimproof_bench_floor.py").write_text(_FLOOR_APP)
    return Node(
        signer,
        {},
        workers=workers,
        threads=threads,
        app="claimproof_bench_floor:application",
        path=str(folder),
    )


_SERVER_FLOOR = '''"""The dedicated server's HTTP floor: ledger.witness_server's connections and
answers, the witness work left out (written by bench_witness)."""

import asyncio
import signal
import socket
import sys

import django

django.setup()

from ledger import witness_server, witness_views  # noqa: E402

ANSWER = witness_views.Answer(200, "text/plain; charset=utf-8", "\\u2014 floor AAAA\\n".encode())


class Floor(witness_server.WitnessServer):
    def submit(self, body, reply):
        reply(ANSWER)


async def main(sock):
    server = Floor()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
    await server.serve(sock)


sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(1024)
sock.setblocking(False)
asyncio.run(main(sock))
'''


def server_floor_node(signer: str, logs: dict[str, str]) -> Node:
    """The dedicated server's HTTP layer (ledger/witness_server.py) answering at once."""
    folder = Path(tempfile.mkdtemp(prefix="claimproof-wbench-sfloor-"))
    (folder / "claimproof_bench_server_floor.py").write_text(_SERVER_FLOOR)
    return Node(
        signer,
        logs,
        workers=1,
        threads=1,
        name=SERVER_WITNESS,
        command=[sys.executable, str(folder / "claimproof_bench_server_floor.py"), "{port}"],
    )


def sign_verify_contenders(count: int) -> dict[str, Callable[[], int]]:
    """One Ed25519 sign + one verify of a checkpoint-sized message, ``count`` times."""
    import nacl.signing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    messages = [os.urandom(120) for _ in range(256)]
    nacl_key = nacl.signing.SigningKey.generate()
    nacl_pairs = [(m, nacl_key.sign(m).signature) for m in messages]
    nacl_sign, nacl_verify = nacl_key.sign, nacl_key.verify_key.verify
    crypto_key = Ed25519PrivateKey.generate()
    crypto_pairs = [(m, crypto_key.sign(m)) for m in messages]
    crypto_sign, crypto_verify = crypto_key.sign, crypto_key.public_key().verify

    def pynacl() -> int:
        for i in range(count):
            m, s = nacl_pairs[i & 255]
            nacl_verify(m, s)
            nacl_sign(m)
        return count

    def cryptography() -> int:
        for i in range(count):
            m, s = crypto_pairs[i & 255]
            crypto_verify(s, m)
            crypto_sign(m)
        return count

    return {
        "PyNaCl sign + verify": pynacl,
        "cryptography sign + verify": cryptography,
    }


# --- (a) requests per second ---------------------------------------------------------------------


def _requests(result: Result, quick: bool, rounds: int) -> None:
    from ledger import note, witness

    per_round = 150 if quick else 500  # per log
    serial_per_round = 100 if quick else 500
    in_process_per_round = 100 if quick else 500
    logs = {}
    signers = {}
    for k in range(2 * CHAINS + 2):
        origin = f"bench-log-{k}.example"
        signers[origin], logs[origin] = note.generate_key(origin)
    origins = list(logs)
    parallel, serial_origin, local_origin = origins[:CHAINS], origins[CHAINS], origins[CHAINS + 1]
    warm = origins[CHAINS + 2 :]
    started = time.perf_counter()
    chains = {o: chain(o, signers[o], per_round * rounds, seed=k) for k, o in enumerate(parallel)}
    chains[serial_origin] = chain(
        serial_origin, signers[serial_origin], serial_per_round * rounds, 7
    )
    chains[local_origin] = chain(
        local_origin, signers[local_origin], in_process_per_round * rounds, 8
    )
    warm_chains = [chain(o, signers[o], 20, seed=100 + k) for k, o in enumerate(warm)]
    print(
        f"  pre-signed {sum(len(c) for c in chains.values()):,} checkpoints "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    signer, _ = note.generate_cosigner_key(WITNESS)
    workers, threads = compose_gunicorn()
    node = Node(signer, logs, workers=workers, threads=threads)
    floor = floor_node(signer, workers, threads)
    server_signer, _ = note.generate_cosigner_key(SERVER_WITNESS)
    server = Node(
        server_signer,
        logs,
        workers=1,
        threads=1,
        name=SERVER_WITNESS,
        command=[sys.executable, "manage.py", "witness_serve", "--bind", "127.0.0.1:{port}"],
    )
    server_floor = server_floor_node(server_signer, logs)
    two_signer, _ = note.generate_cosigner_key(SERVER_WITNESS_2)
    server_two = Node(
        two_signer,
        logs,
        workers=2,
        threads=1,
        name=SERVER_WITNESS_2,
        command=[
            *(sys.executable, "manage.py", "witness_serve"),
            *("--bind", "127.0.0.1:{port}", "--workers", "2"),
        ],
    )
    try:
        _load_in_process(node.port, warm_chains)  # every worker's imports and connections, untimed
        _load_in_process(floor.port, warm_chains)
        _load_in_process(server.port, warm_chains)
        _load_in_process(server_floor.port, warm_chains)
        _load_in_process(server_two.port, warm_chains)
        rates: dict[str, list[float]] = {
            "http": [],
            "server": [],
            "floor": [],
            "server_floor": [],
            "server_two": [],
            "serial": [],
            "local": [],
            "commit": [],
            "ref": [],
        }
        commits = durable_commits(in_process_per_round)
        ref = sign_verify_contenders(3_000 if quick else 20_000)
        ref_rates: dict[str, list[float]] = {n: [] for n in ref}
        from ledger import tlog_witness

        local_reqs = [tlog_witness.parse_request(b) for b in chains[local_origin]]
        for r in range(rounds):
            part = [chains[o][r * per_round : (r + 1) * per_round] for o in parallel]
            got = _load_in_process(node.port, part)
            rates["http"].append(got["answered"] / got["seconds"])
            got = _load_in_process(server.port, part)
            rates["server"].append(got["answered"] / got["seconds"])
            got = _load_in_process(floor.port, part)
            rates["floor"].append(got["answered"] / got["seconds"])
            got = _load_in_process(server_floor.port, part)
            rates["server_floor"].append(got["answered"] / got["seconds"])
            got = _load_in_process(server_two.port, part)
            rates["server_two"].append(got["answered"] / got["seconds"])
            one = chains[serial_origin][r * serial_per_round : (r + 1) * serial_per_round]
            got = _load_in_process(node.port, [one])
            rates["serial"].append(got["answered"] / got["seconds"])
            batch = local_reqs[r * in_process_per_round : (r + 1) * in_process_per_round]

            def local(batch=batch) -> int:
                for req in batch:
                    witness.witness_add_checkpoint(
                        witness_signer_key=signer,
                        log_verifier_keys={local_origin: logs[local_origin]},
                        old_size=req.old_size,
                        proof=req.proof,
                        note_text=req.note_text,
                    )
                return len(batch)

            seconds, n = timed(local)
            rates["local"].append(n / seconds)
            seconds, n = timed(commits)
            rates["commit"].append(n / seconds)
            for name, values in best_rates(ref, 1).items():
                ref_rates[name].extend(values)
    except Exception:
        for each in (node, floor, server, server_floor, server_two):
            print(each.tail(), file=sys.stderr)
        raise
    finally:
        for each in (node, floor, server, server_floor, server_two):
            each.stop()
    ref_name = max(ref_rates, key=lambda n: best(ref_rates[n]))
    reference = best(ref_rates[ref_name])
    others = ", ".join(f"{n}: {fmt(best(v))}/s" for n, v in ref_rates.items() if n != ref_name)
    http_rate = best(rates["http"])
    result.details["requests"] = {
        "chains": CHAINS,
        "requests_per_chain_per_round": per_round,
        "gunicorn": {"workers": workers, "threads": threads},
        "rates": rates,
        "reference": {n: v for n, v in ref_rates.items()},
    }
    print(
        f"  HTTP, {CHAINS} logs in parallel: {fmt(http_rate)} requests/s "
        f"({spread(rates['http'])}); "
        f"dedicated witness server: {fmt(best(rates['server']))}/s ({spread(rates['server'])}); "
        f"its HTTP floor: {fmt(best(rates['server_floor']))}/s; "
        f"two processes: {fmt(best(rates['server_two']))}/s ({spread(rates['server_two'])}); "
        f"one log: {fmt(best(rates['serial']))}/s; in process: {fmt(best(rates['local']))}/s; "
        f"HTTP floor (an app answering at once): {fmt(best(rates['floor']))}/s; "
        f"durable commits: {fmt(best(rates['commit']))}/s; "
        f"{ref_name}: {fmt(reference)}/s ({others})",
        flush=True,
    )
    result.rows += [
        Row(
            figure=f"add-checkpoint over HTTP, {CHAINS} logs in parallel (requests/s)",
            value=http_rate,
            unit="",
            reference=ref_name,
            reference_value=reference,
            aim=AIM,
            note=f"gunicorn {workers} workers x {threads} threads (compose.yaml); "
            f"{per_round} checkpoints per log",
        ),
        Row(
            figure=f"dedicated witness server, {CHAINS} logs (requests/s)",
            value=best(rates["server"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
            aim=AIM,
            note="manage.py witness_serve: one process, httptools, group commit; same load",
        ),
        Row(
            figure=f"context: dedicated witness server, 2 processes, {CHAINS} logs (requests/s)",
            value=best(rates["server_two"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
            note="manage.py witness_serve --workers 2 (one per core here); same load",
        ),
        Row(
            figure=f"context: dedicated server's HTTP floor, answering at once, {CHAINS} "
            "connections (requests/s)",
            value=best(rates["server_floor"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
            note="ledger/witness_server.py's connections with the witness work left out",
        ),
        Row(
            figure=f"context: HTTP floor, an app answering at once, {CHAINS} connections "
            "(requests/s)",
            value=best(rates["floor"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
            note="same gunicorn and load: what HTTP alone costs here",
        ),
        Row(
            figure="context: add-checkpoint over HTTP, one log, one connection (requests/s)",
            value=best(rates["serial"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
        ),
        Row(
            figure="context: witness_add_checkpoint in process, no HTTP (requests/s)",
            value=best(rates["local"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
            note="one log, one after another: each waits for its own durable commit",
        ),
        Row(
            figure="context: one-row INSERT + COMMIT, raw (the floor: one per cosignature)",
            value=best(rates["commit"]),
            unit="",
            reference=ref_name,
            reference_value=reference,
        ),
    ]
    result.details["reference_rate"] = reference
    result.details["reference_name"] = ref_name


# --- (b) sealing to a final checkpoint -----------------------------------------------------------


def _extra_witnesses(count: int) -> list[int]:
    """``count`` more members with witnesses hosted on this node; their MemberKey ids."""
    from ledger import keys, note
    from ledger.models import Member, MemberKey

    ids = []
    for k in range(count):
        name = f"bench-extra-{k}.example"
        signer, verifier = note.generate_cosigner_key(name)
        keys.write_secret(keys.witnesses_dir() / f"{name}.key", signer)
        member = Member.objects.create(name=name)
        key = MemberKey(member=member, purpose=MemberKey.Purpose.COSIGN, verifier_key=verifier)
        key.clean()
        key.save()
        ids.append(key.pk)
    return ids


def _seal_to_final(result: Result, quick: bool, rounds: int) -> None:
    from django.conf import settings
    from django.utils import timezone

    from bench.bench_anchors import presign
    from ledger import services
    from ledger.models import MemberKey

    per_round = 5 if quick else 12  # checkpoints per setting per round
    pending = 16
    statements = iter(presign(per_round * rounds * 3 * pending))
    extra = _extra_witnesses(4)

    def witnesses(n: int) -> None:
        live = MemberKey.objects.filter(pk__in=extra)
        if n == 3:
            live.update(revoked_at=timezone.now(), revocation_reason="bench: 3 witnesses")
        else:
            live.update(revoked_at=None, revocation_reason="")
        settings.LEDGER_QUORUM = n
        count = MemberKey.objects.filter(purpose="cosign", revoked_at__isnull=True).count()
        if count != n:
            raise RuntimeError(f"{count} witnesses live, not {n}")

    def seal_final() -> None:
        cp = services.ledger_seal()
        services.checkpoint_cosign(checkpoint=cp)
        if not services.checkpoint_is_final(cp):
            raise RuntimeError(f"checkpoint {cp.size} is not final")

    def seal_only() -> None:
        if services.ledger_seal() is None:
            raise RuntimeError("nothing sealed")

    times: dict[str, list[float]] = {"3": [], "7": [], "seal": []}
    old_quorum = settings.LEDGER_QUORUM
    try:
        for _ in range(rounds):
            for key, setting, work in (
                ("3", 3, seal_final),
                ("7", 7, seal_final),
                ("seal", 3, seal_only),
            ):
                witnesses(setting)
                for _ in range(per_round):
                    services.anchor_append_many(datas=[next(statements) for _ in range(pending)])
                    seconds, _ = timed(work)
                    times[key].append(seconds)
        # The seal-only checkpoints were never cosigned: let the witnesses catch up, untimed.
        services.checkpoint_cosign(checkpoint=services.checkpoint_latest())
    finally:
        settings.LEDGER_QUORUM = old_quorum
    med = {k: statistics.median(v) for k, v in times.items()}
    per_witness = (med["7"] - med["3"]) / 4
    reference = result.details.get("reference_rate")
    ref_name = result.details.get("reference_name", "Ed25519 sign + verify")
    result.details["seal_to_final"] = {
        "checkpoints_per_setting": per_round * rounds,
        "pending_per_checkpoint": pending,
        "median_s": med,
        "per_witness_s": per_witness,
        "all_s": times,
    }
    print(
        f"  seal -> final (median of {per_round * rounds}, {pending} anchors each): "
        f"3 witnesses {med['3'] * 1000:.1f} ms, 7 witnesses {med['7'] * 1000:.1f} ms, "
        f"seal alone {med['seal'] * 1000:.1f} ms; per witness {per_witness * 1000:.2f} ms",
        flush=True,
    )
    for n in ("3", "7"):
        result.rows.append(
            Row(
                figure=f"seal -> final checkpoint, {n} hosted witnesses, quorum {n} (1/s)",
                value=1 / med[n],
                unit="",
                reference="ledger_seal alone",
                reference_value=1 / med["seal"],
                note=f"{med[n] * 1000:.1f} ms vs {med['seal'] * 1000:.1f} ms",
            )
        )
    if reference and per_witness > 0:
        result.rows.append(
            Row(
                figure="per-witness cost, (t7 - t3) / 4, as cosignatures/s",
                value=1 / per_witness,
                unit="",
                reference=ref_name,
                reference_value=reference,
                note=f"{per_witness * 1000:.2f} ms per witness",
            )
        )


def _seal_to_final_remote(result: Result, quick: bool, rounds: int) -> None:
    """(c) As (b), the witnesses being 3 and 7 node processes asked over HTTP (in parallel)."""
    from django.conf import settings
    from django.utils import timezone

    from bench.bench_anchors import presign
    from ledger import keys, note, services
    from ledger.models import Member, MemberKey

    per_round = 5 if quick else 12
    pending = 16
    # presign is deterministic: skip the statements (b) anchored already.
    skip = per_round * rounds * 3 * pending
    needed = rounds * (3 * per_round + 2) * pending
    statements = iter(presign(skip + needed)[skip:])
    logs = {settings.LEDGER_ORIGIN: keys.operator_verifier_key()}
    nodes, remote = [], []
    hosted = list(
        MemberKey.objects.filter(purpose="cosign", revoked_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    old_quorum = settings.LEDGER_QUORUM
    try:
        for k in range(7):
            name = f"bench-remote-{k}.example"
            signer, verifier = note.generate_cosigner_key(name)
            node = Node(signer, logs, workers=1, threads=2, name=name, wait=False)
            nodes.append(node)
            member = Member.objects.create(name=name, witness_url=node.url)
            key = MemberKey(member=member, purpose=MemberKey.Purpose.COSIGN, verifier_key=verifier)
            key.clean()
            key.save()
            remote.append(key.pk)
        for node in nodes:
            node.wait_ready()
        MemberKey.objects.filter(pk__in=hosted).update(
            revoked_at=timezone.now(), revocation_reason="bench: remote witnesses only"
        )

        def witnesses(n: int) -> None:
            MemberKey.objects.filter(pk__in=remote[:n]).update(revoked_at=None)
            MemberKey.objects.filter(pk__in=remote[n:]).update(
                revoked_at=timezone.now(), revocation_reason=f"bench: {n} witnesses"
            )
            settings.LEDGER_QUORUM = n

        def seal_final() -> None:
            cp = services.ledger_seal()
            outcomes = services.checkpoint_cosign(checkpoint=cp)
            if not services.checkpoint_is_final(cp):
                raise RuntimeError(f"checkpoint {cp.size} is not final: {outcomes}")

        def seal_only() -> None:
            if services.ledger_seal() is None:
                raise RuntimeError("nothing sealed")

        times: dict[str, list[float]] = {"3": [], "7": [], "seal": []}
        for _ in range(rounds):
            for key, setting, work in (("3", 3, seal_final), ("7", 7, seal_final)):
                witnesses(setting)
                # Untimed: a witness revoked for a while catches up first (one 409 round trip).
                services.anchor_append_many(datas=[next(statements) for _ in range(pending)])
                seal_final()
                for _ in range(per_round):
                    services.anchor_append_many(datas=[next(statements) for _ in range(pending)])
                    seconds, _ = timed(work)
                    times[key].append(seconds)
            for _ in range(per_round):
                services.anchor_append_many(datas=[next(statements) for _ in range(pending)])
                seconds, _ = timed(seal_only)
                times["seal"].append(seconds)
    except Exception:
        for node in nodes:
            print(node.tail(), file=sys.stderr)
        raise
    finally:
        settings.LEDGER_QUORUM = old_quorum
        for node in nodes:
            node.stop()
        MemberKey.objects.filter(pk__in=hosted).update(revoked_at=None, revocation_reason="")
        MemberKey.objects.filter(pk__in=remote).update(
            revoked_at=timezone.now(), revocation_reason="bench: stopped"
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    result.details["seal_to_final_remote"] = {
        "checkpoints_per_setting": per_round * rounds,
        "pending_per_checkpoint": pending,
        "median_s": med,
        "all_s": times,
    }
    print(
        f"  seal -> final over HTTP (median of {per_round * rounds}): 3 witness processes "
        f"{med['3'] * 1000:.1f} ms, 7 witness processes {med['7'] * 1000:.1f} ms, "
        f"seal alone {med['seal'] * 1000:.1f} ms",
        flush=True,
    )
    for n in ("3", "7"):
        result.rows.append(
            Row(
                figure=f"seal -> final, {n} witness node processes over HTTP, quorum {n} (1/s)",
                value=1 / med[n],
                unit="",
                reference="ledger_seal alone",
                reference_value=1 / med["seal"],
                note=f"{med[n] * 1000:.1f} ms vs {med['seal'] * 1000:.1f} ms",
            )
        )


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    result = Result(NAME, TITLE)
    quick = sizes == QUICK
    _requests(result, quick, sizes.rounds)
    _seal_to_final(result, quick, sizes.rounds)
    _seal_to_final_remote(result, quick, sizes.rounds)
    return result
