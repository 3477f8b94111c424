"""Benchmark 6: end to end, signed submissions in and verdicts out.

gunicorn (as in benchmark 5), Celery workers on Redis (a queue of the bench's own) and the bench
PostgreSQL database, all on this machine; a separate load process (``bench/httpload.py``) posts
unique pre-signed claim Bundles (each billing 1 or 2 freshly anchored, sealed and cosigned
Procedures) for ``duration`` seconds. The main process counts claims reaching a verdict
(verified, needs_review or rejected) every half second. **Figure:** verdicts per second
sustained over the load window (after a warm-up); the aim is 550 claims/s on this 2-core
machine. Then the backlog is drained and timed.

Where the time goes: the CPU seconds each part used during the run (from ``/proc``: the gunicorn
master and workers, the Celery worker and its pool, the PostgreSQL backends serving the bench
database, the load process; Redis is shared with other users of the machine), per claim and as
a share of the machine's two cores; the latency from submission to verdict; the HTTP figures of
the intake. What each part costs per claim says what a rate needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_intake import (
    THREADS,
    WORKERS,
    _die_with_parent,
    child_env,
    load,
    purge_queue,
    queue_name,
    start_gunicorn,
    stop,
    write_bodies,
)
from bench.common import ROOT, Result, Row, Sizes, fmt, table

NAME = "e2e"
TITLE = "6. End to end: HTTP submissions to verdicts (gunicorn, Celery on Redis, PostgreSQL)"
TARGET = 550.0  # claims/s, the aim on this 2-core machine
CELERY_CONCURRENCY = 2  # one worker process, a prefork pool of two (one per core)
CLK = os.sysconf("SC_CLK_TCK")
VERDICTS = ("verified", "needs_review", "rejected")
WARM = 40  # claims through the whole path before the measured load


# --- CPU accounting from /proc ------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every descendant, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents[int(entry)], cpu[int(entry)] = found
    out, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in cpu:
            out[pid] = cpu[pid]
        frontier += [child for child, parent in parents.items() if parent == pid]
    return out


def backend_pids() -> list[int]:
    """PostgreSQL backends connected to the bench database (not this process's own)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [r[0] for r in cursor.fetchall()]


def pids_cpu(pids: list[int]) -> dict[int, float]:
    return {pid: s[1] for pid in pids if (s := _stat(pid)) is not None}


def redis_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.stdout.strip() else None


def delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# --- processes ----------------------------------------------------------------------------------


def discard_received() -> int:
    """Delete the claims earlier benchmarks of this run left ``received`` (never verified: the
    intake benchmarks' queue has no worker), so that the worker here pulls only this load."""
    from claims.models import Claim
    from claims.states import ClaimStatus

    deleted, _ = Claim.objects.filter(status=ClaimStatus.RECEIVED).delete()
    return deleted


def start_worker(log: Path) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [str(bin_dir / "celery"), "-A", "config", "worker", "-Q", queue_name(),
         f"--concurrency={CELERY_CONCURRENCY}",
         f"--loglevel={os.environ.get('CLAIMPROOF_BENCH_WORKER_LOG', 'WARNING')}",
         "--without-gossip", "--without-mingle", "--without-heartbeat",
         f"--hostname=bench-{os.getpid()}@%h"],
        cwd=ROOT, env=child_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )  # fmt: skip


def counts(user_id: int) -> tuple[int, int]:
    """(claims submitted, claims with a verdict) by the bench's API user."""
    from django.db.models import Count, Q

    from claims.models import Claim

    row = Claim.objects.filter(submitted_by_id=user_id).aggregate(
        total=Count("pk"), done=Count("pk", filter=Q(verdict__in=VERDICTS))
    )
    return row["total"], row["done"]


class Sampler(threading.Thread):
    """Counts submitted claims and verdicts every ``every`` seconds, on its own connection."""

    def __init__(self, user_id: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.user_id, self.every = user_id, every
        self.samples: list[tuple[float, int, int]] = []
        self.offset = (0, 0)  # counts before the measured load
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.halt.is_set():
                total, done = counts(self.user_id)
                self.samples.append(
                    (time.perf_counter(), total - self.offset[0], done - self.offset[1])
                )
                self.halt.wait(self.every)
        finally:
            connection.close()


def latencies(user_id: int) -> dict[str, float]:
    """Submission to verdict, in milliseconds: p50, p90, p99 (from the claims' own clocks)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY "
            "EXTRACT(EPOCH FROM (updated_at - created_at)) * 1000) FROM claims_claim "
            "WHERE submitted_by_id = %s AND verdict = ANY(%s)",
            [user_id, list(VERDICTS)],
        )
        p50, p90, p99 = cursor.fetchone()[0] or (float("nan"),) * 3
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


def window_rate(samples: list[tuple[float, int, int]], start: float, end: float, col: int):
    """Events per second between the samples nearest ``start`` and ``end``."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return float("nan")
    return (inside[-1][col] - inside[0][col]) / (inside[-1][0] - inside[0][0])


# --- the benchmark ------------------------------------------------------------------------------


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    from bench.bench_claims import MEMBER, signed_bodies
    from tests.claims import factories

    result = Result(NAME, TITLE)
    quick = sizes.rounds < 3
    duration, warmup = (10.0, 3.0) if quick else (25.0, 5.0)
    count = 1500 if quick else 5000
    kit = factories.make_provider(MEMBER)
    made = time.perf_counter()
    bodies = signed_bodies(kit, count, seed=6)
    print(f"  {count} signed claims built in {time.perf_counter() - made:.0f} s (untimed)")
    tmp = Path(tempfile.mkdtemp(prefix="claimproof-e2e-"))
    warm_file = write_bodies(bodies[:WARM], tmp / "warm.ndjson")
    body_file = write_bodies(bodies[WARM:], tmp / "bodies.ndjson")
    purge_queue()
    discard_received()
    web, port = start_gunicorn(tmp / "gunicorn.log")
    worker = start_worker(tmp / "celery.log")
    sampler = Sampler(kit.user.pk)
    try:
        # Warm-up: a few claims through the whole path (every gunicorn worker and pool process
        # imported, connected and cached), then the measured load starts from an empty queue.
        load(port, "/api/v1/claims", kit.token, warm_file, duration=60, warmup=0.0,
             prefix="e2e-warm", once=True)  # fmt: skip
        ready = time.monotonic() + 120
        while counts(kit.user.pk)[1] < WARM:
            if worker.poll() is not None or time.monotonic() > ready:
                raise RuntimeError(f"the Celery worker is not verifying: see {tmp / 'celery.log'}")
            time.sleep(0.3)
        redis = redis_pid()
        cpu0 = {
            "web": tree_cpu(web.pid),
            "worker": tree_cpu(worker.pid),
            "redis": pids_cpu([redis] if redis else []),
        }
        pg0 = pids_cpu(backend_pids())
        sampler.offset = counts(kit.user.pk)
        sampler.start()
        began = time.perf_counter()
        http = load(port, "/api/v1/claims", kit.token, body_file, duration=duration,
                    warmup=0.0, prefix="e2e", once=True)  # fmt: skip
        load_end = time.perf_counter()
        pg1 = pids_cpu(backend_pids())
        cpu1 = {
            "web": tree_cpu(web.pid),
            "worker": tree_cpu(worker.pid),
            "redis": pids_cpu([redis] if redis else []),
        }
        submitted, done = counts(kit.user.pk)
        drain_deadline = time.monotonic() + (60 if quick else 180)
        while done < submitted and time.monotonic() < drain_deadline:
            time.sleep(0.5)
            submitted, done = counts(kit.user.pk)
        drained = time.perf_counter()
    finally:
        sampler.halt.set()
        stop(worker)
        stop(web)
        purge_queue()
    sampler.join(timeout=5)
    samples = sampler.samples
    sustained = window_rate(samples, began + warmup, load_end, 2)
    intake_rate = window_rate(samples, began + warmup, load_end, 1)
    at_end = next((s for s in samples if s[0] >= load_end), samples[-1])
    backlog = at_end[1] - at_end[2]
    seconds = load_end - began
    cpu = {name: delta(cpu0[name], cpu1[name]) for name in cpu0}
    cpu["postgres"] = delta(pg0, pg1)
    claims_in_window = max(at_end[1], 1)
    verdicts_in_window = max(at_end[2], 1)
    lat = latencies(kit.user.pk)
    statuses = _statuses(kit.user.pk)

    result.rows.append(
        Row(
            figure="verdicts per second, sustained (claims/s)",
            value=sustained,
            unit="",
            reference="the issue's aim on 2 cores",
            reference_value=TARGET,
            aim=1.0,
            note=f"intake {intake_rate:.0f}/s over HTTP; backlog {backlog} at the end of the load",
        )
    )
    print(
        f"  load: {seconds:.1f} s, {http['requests']} requests ({http['statuses']}), "
        f"{fmt(http['rate'])} requests/s, p50 {http['p50_ms']:.0f} ms, p99 {http['p99_ms']:.0f} ms"
    )
    print(
        f"  verdicts/s sustained (from {warmup:.0f} s to the end of the load): {fmt(sustained)}; "
        f"submissions/s in that window: {fmt(intake_rate)}; backlog at the end: {backlog}"
    )
    print(
        f"  drain: all {submitted - sampler.offset[0]} claims concluded "
        f"{drained - load_end:.1f} s after the load "
        f"({done - sampler.offset[1]} with a verdict); verdicts (warm-up included): {statuses}"
    )
    print(
        f"  submission to verdict: p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms, "
        f"p99 {lat['p99_ms']:.0f} ms"
    )
    print("\n  where the time goes (CPU seconds during the load window, from /proc):")
    budget = 2 * seconds
    rows = []
    for name, label, per in (
        ("web", f"gunicorn ({WORKERS} workers x {THREADS} threads): intake", claims_in_window),
        ("worker", f"Celery (pool of {CELERY_CONCURRENCY}): verification", verdicts_in_window),
        ("postgres", "PostgreSQL backends of the bench database", claims_in_window),
        ("redis", "Redis (shared with the machine's other users)", claims_in_window),
    ):
        rows.append([label, f"{cpu[name]:.1f}", f"{cpu[name] / per * 1e3:.2f}",
                     f"{cpu[name] / budget:.0%}"])  # fmt: skip
    total = sum(cpu.values())
    rows.append(["all of the above", f"{total:.1f}", f"{total / claims_in_window * 1e3:.2f}",
                 f"{total / budget:.0%}"])  # fmt: skip
    print("    " + table(["part", "CPU s", "ms per claim", "of 2 cores"], rows).replace(
        "\n", "\n    "))  # fmt: skip
    per_claim_ms = total / claims_in_window * 1e3
    print(
        f"  {per_claim_ms:.1f} ms of CPU per claim end to end (the load process and the rest "
        f"of the machine not counted): 2 cores allow at most {fmt(2000 / per_claim_ms)} claims/s "
        f"at this cost; {TARGET:.0f}/s needs {2000 / TARGET:.2f} ms per claim."
    )
    result.details = {
        "duration_s": seconds,
        "warmup_s": warmup,
        "bodies": count,
        "http": http,
        "sustained_verdicts_per_s": sustained,
        "submissions_per_s": intake_rate,
        "backlog_at_end": backlog,
        "drain_s": drained - load_end,
        "latency": lat,
        "statuses": statuses,
        "cpu_s": cpu,
        "cpu_ms_per_claim": per_claim_ms,
        "samples": [(round(t - began, 2), n, d) for t, n, d in samples],
    }
    return result


def _statuses(user_id: int) -> dict[str, int]:
    from django.db.models import Count

    from claims.models import Claim

    rows = Claim.objects.filter(submitted_by_id=user_id).values("status").annotate(n=Count("pk"))
    return {r["status"]: r["n"] for r in rows}
