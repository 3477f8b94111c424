"""Benchmark 5: HTTP intake (POST /api/v1/claims) against a trivial endpoint of the same stack.

gunicorn serves the application as production does (``config.wsgi``, gthread workers) on
127.0.0.1 against the bench database, with ``bench/site_settings.py``: production settings plus
``POST /bench/trivial`` (token authentication, reads the body, answers 202 with a small JSON
object) and a Redis queue of the bench's own, which no worker reads (purged at the end). A
separate process (``bench/httpload.py``: threads, keep-alive connections, closed loop) posts
pre-signed claim Bundles with unique Idempotency-Keys, and the same bodies to the trivial
endpoint, in interleaved rounds. Each figure is the best round; p50 / p99 latency are from it.

Then the queries of one intake request and a cProfile of intake requests in-process (Django's
test client through the same middleware: after the first request, whose token is read, each new
claim takes the lean path in front of the rest of the middleware and DRF,
``claims.api.IntakeMiddleware``), so the next step is clear.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.bench_anchors import _trim_profile
from bench.common import BENCH_DB, BENCH_URL, ROOT, Result, Row, Sizes, fmt, table

NAME = "intake"
TITLE = "5. HTTP intake: POST /api/v1/claims vs a trivial endpoint, gunicorn, same run"
AIM = 0.5
REDIS_URL = os.environ.get("CLAIMPROOF_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def production_shape() -> tuple[int, int]:
    """gunicorn's workers and threads as compose.yaml's ``web`` service runs it (the production
    shape); CLAIMPROOF_BENCH_GUNICORN=WxT (e.g. 2x4) tries another."""
    if wanted := os.environ.get("CLAIMPROOF_BENCH_GUNICORN"):
        workers, threads = wanted.lower().split("x")
        return int(workers), int(threads)
    compose = (ROOT / "compose.yaml").read_text()
    line = next((ln for ln in compose.splitlines() if "gunicorn" in ln and "--workers" in ln), "")
    workers, threads = re.search(r"--workers=(\d+)", line), re.search(r"--threads=(\d+)", line)
    if workers is None or threads is None:
        raise RuntimeError("compose.yaml: no gunicorn --workers/--threads in the web service")
    return int(workers[1]), int(threads[1])


WORKERS, THREADS = production_shape()
CONCURRENCY = WORKERS * THREADS

# (label, path suffix, function name): where an intake request's time goes.
PROFILE_BUCKETS = [
    ("PostgreSQL round trips (psycopg execute)", "psycopg/cursor.py", "execute"),
    ("lean path in front of the middleware (api._lean_intake)", "claims/api.py", "_lean_intake"),
    ("token authentication (full stack, one query)", "rest_framework/authentication.py",
     "authenticate"),
    ("intake service, lean (services.claim_receive)", "claims/services.py", "claim_receive"),
    ("intake service, full stack (services.claim_submit)", "claims/services.py", "claim_submit"),
    ("  canonical payload (disclosure.canonical_payload)", "claims/disclosure.py",
     "canonical_payload"),
    ("  exact JSON (money.loads)", "claims/money.py", "loads"),
    ("  FHIR validation (fhir_validation.validate_bundle)", "claims/fhir_validation.py",
     "validate_bundle"),
    ("  disclosures (disclosure.disclosed_procedures)", "claims/disclosure.py",
     "disclosed_procedures"),
    ("  the rows and their writing (services._store)", "claims/services.py", "_store"),
    ("    audit entry (audit_values)", "audit/services.py", "audit_values"),
    ("    claim, items, event, audit entry (intake_write.write)", "claims/intake_write.py",
     "write"),
    ("    queueing the task (services._enqueue)", "claims/services.py", "_enqueue"),
    ("the 202 answer (api.accepted_body)", "claims/api.py", "accepted_body"),
]  # fmt: skip


# --- processes ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def queue_name() -> str:
    return f"bench-{BENCH_DB}"


def child_env() -> dict[str, str]:
    """The environment of the bench's gunicorn and Celery processes."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=BENCH_URL,
        DJANGO_SETTINGS_MODULE="bench.site_settings",
        DEBUG="False",
        LOG_LEVEL="WARNING",
        CELERY_BROKER_URL=REDIS_URL,
        CLAIMPROOF_BENCH_QUEUE=queue_name(),
        PYTHONPATH=str(ROOT),
    )
    for name in ("LEDGER_KEYS_DIR", "LEDGER_OPERATOR_KEY", "LEDGER_OPERATOR_KEY_FILE"):
        env.pop(name, None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(log: Path, workers: int = WORKERS, threads: int = THREADS):
    """gunicorn serving the application on a free port; returns (process, port) once it
    answers."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "config.wsgi", f"--bind=127.0.0.1:{port}",
         f"--workers={workers}", f"--threads={threads}", "--worker-class=gthread",
         "--keep-alive=30", "--log-level=warning",
         "--no-control-socket"],  # gunicorn 27: else one control socket path per user, shared
        cwd=ROOT, env=child_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn stopped: see {log}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/v1/ledger/checkpoint", timeout=5
            ):
                return proc, port
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"gunicorn did not answer within 60 s: see {log}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this benchmark started (by its own pid)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def purge_queue() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    return int(client.delete(queue_name()))


def load(
    port: int,
    path: str,
    token: str,
    bodies: Path,
    *,
    duration: float,
    warmup: float,
    prefix: str,
    once: bool = False,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    """Run bench/httpload.py in its own process; its JSON summary."""
    args = [sys.executable, str(ROOT / "bench" / "httpload.py"), f"--port={port}",
            f"--path={path}", f"--token={token}", f"--bodies={bodies}",
            f"--concurrency={concurrency}", f"--duration={duration}", f"--warmup={warmup}",
            f"--key-prefix={prefix}"] + (["--once"] if once else [])  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + warmup + 600)
    if out.returncode != 0 and not out.stdout.strip():
        raise RuntimeError(f"httpload failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def write_bodies(bodies: list[bytes], path: Path) -> Path:
    with path.open("wb") as f:
        for body in bodies:
            if b"\n" in body:
                body = json.dumps(json.loads(body)).encode()  # one line each
            f.write(body + b"\n")
    return path


# --- in-process: queries and profile of one request ---------------------------------------------


def _client_post(client, token: str, body: bytes, key: str):
    return client.post(
        "/api/v1/claims",
        data=body,
        content_type="application/fhir+json",
        HTTP_AUTHORIZATION=f"Token {token}",
        HTTP_IDEMPOTENCY_KEY=key,
        HTTP_HOST="127.0.0.1",
    )


def request_queries(token: str, bodies: list[bytes]) -> tuple[float, list[str]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    with CaptureQueriesContext(connection) as ctx:
        for i, body in enumerate(bodies):
            response = _client_post(client, token, body, f"queries-{i}")
            if response.status_code != 202:
                raise RuntimeError(f"intake answered {response.status_code}: {response.content!r}")
    shapes: dict[str, float] = {}
    for q in ctx.captured_queries:
        sql = " ".join(q["sql"].split())[:70]
        shapes[sql] = shapes.get(sql, 0) + 1 / len(bodies)
    lines = [f"{n:.2f}  {sql}" for sql, n in shapes.items()]
    return len(ctx.captured_queries) / len(bodies), lines


def profile_requests(token: str, bodies: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    from django.test import Client

    client = Client()
    profiler = cProfile.Profile()
    profiler.enable()
    for i, body in enumerate(bodies):
        _client_post(client, token, body, f"profile-{i}")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue(), buckets(stats, len(bodies), PROFILE_BUCKETS)


def buckets(stats: pstats.Stats, count: int, wanted: list[tuple[str, str, str]]) -> list[dict]:
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    out = []
    for label, suffix, func in wanted:
        entries = [v for (path, _, name), v in raw.items() if path.endswith(suffix)
                   and name == func]  # fmt: skip
        seconds = sum(v[3] for v in entries)
        out.append({"what": label, "calls_per_claim": sum(v[1] for v in entries) / count,
                    "us_per_claim": seconds / count * 1e6,
                    "share": seconds / total if total else 0.0})  # fmt: skip
    return out


def print_buckets(rows: list[dict[str, Any]], unit: str = "claim") -> None:
    body = [
        [b["what"], f"{b['calls_per_claim']:.2f}", f"{b['us_per_claim']:.0f}", f"{b['share']:.0%}"]
        for b in rows
    ]
    text = table(["call", f"calls/{unit}", f"us/{unit}", "share"], body)
    print("    " + text.replace("\n", "\n    "), flush=True)


# --- the benchmark ------------------------------------------------------------------------------


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    from bench.bench_claims import MEMBER, signed_bodies
    from tests.claims import factories

    result = Result(NAME, TITLE)
    quick = sizes.rounds < 3
    duration, warmup = (5.0, 1.0) if quick else (10.0, 2.0)
    kit = factories.make_provider(MEMBER)
    bodies = signed_bodies(kit, 200 if quick else 600, seed=5)
    tmp = Path(tempfile.mkdtemp(prefix="claimproof-intake-"))
    body_file = write_bodies(bodies, tmp / "bodies.ndjson")
    log = tmp / "gunicorn.log"
    purge_queue()
    proc, port = start_gunicorn(log)
    rounds: dict[str, list[dict[str, Any]]] = {"trivial": [], "intake": []}
    try:
        load(port, "/bench/trivial", kit.token, body_file, duration=2, warmup=0, prefix="warm-t")
        load(port, "/api/v1/claims", kit.token, body_file, duration=2, warmup=0, prefix="warm-i")
        for r in range(sizes.rounds):
            for name, path in (("trivial", "/bench/trivial"), ("intake", "/api/v1/claims")):
                out = load(port, path, kit.token, body_file, duration=duration, warmup=warmup,
                           prefix=f"{name}-{r}")  # fmt: skip
                bad = {s: n for s, n in out["statuses"].items() if s != "202"}
                if bad:
                    raise RuntimeError(f"{name}: answers other than 202: {bad}; see {log}")
                rounds[name].append(out)
    finally:
        stop(proc)
        queued = purge_queue()
    best = {name: max(runs, key=lambda o: o["rate"]) for name, runs in rounds.items()}
    intake, trivial = best["intake"], best["trivial"]
    result.rows.append(
        Row(
            figure="POST /api/v1/claims over HTTP (requests/s)",
            value=intake["rate"],
            unit="",
            reference="POST /bench/trivial, same stack",
            reference_value=trivial["rate"],
            aim=AIM,
            note=f"p50 {intake['p50_ms']:.1f} ms, p99 {intake['p99_ms']:.1f} ms; trivial p50 "
            f"{trivial['p50_ms']:.1f} ms, p99 {trivial['p99_ms']:.1f} ms",
        )
    )
    for name, runs in rounds.items():
        rates = ", ".join(fmt(o["rate"]) for o in runs)
        b = best[name]
        print(
            f"  {name:<8} best {fmt(b['rate'])} requests/s (rounds: {rates}); p50 "
            f"{b['p50_ms']:.1f} ms, p90 {b['p90_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, max "
            f"{b['max_ms']:.0f} ms"
        )
    print(
        f"  gunicorn {WORKERS} workers x {THREADS} threads, {CONCURRENCY} keep-alive connections "
        f"from a separate process; {queued} task queue(s) purged (no worker read them)"
    )
    per_request, shapes = request_queries(kit.token, bodies[:20])
    print(f"\n  statements per intake request (in-process, Django test client): {per_request:.1f}")
    print("    " + "\n    ".join(shapes))
    text, rows = profile_requests(kit.token, bodies[20:120] if not quick else bodies[20:80])
    print("\n  cProfile of intake requests in-process, top 25 by cumulative time:")
    print("    " + _trim_profile(text).replace("\n", "\n    "))
    print("  where an intake request's time goes (cumulative, overlapping):")
    print_buckets(rows, "request")
    result.details = {
        "gunicorn": {"workers": WORKERS, "threads": THREADS, "connections": CONCURRENCY},
        "duration_s": duration,
        "rounds": rounds,
        "statements_per_request": per_request,
        "profile_top25": text,
        "profile_buckets": rows,
    }
    return result
