"""Benchmark 7: batch re-verification jobs run by real Celery worker processes.

Claims are built as benchmark 4 builds them (``bench_claims.signed_bodies``: Procedures anchored
in NDJSON-sized batches, sealed and cosigned once, signed Bundles of 1 or 2 Procedures),
submitted with ``claim_submit`` and verified once in-process (all untimed). A private
``redis-server`` on a free port is the broker (the machine's Redis is shared); workers are
``celery -A config worker --pool=solo`` processes on the bench database, as in production.

* **rate, one worker** (timed by the job itself: ``finished_at - started_at``, planning
  included): a ``{"provider": id}`` job re-verifies every claim (a new verification run each).
  Reference: the faster Ed25519 binding, measured in the same run. Aim >= 0.5x.
* **rate, two workers**: the same job with two worker processes. Reference: one worker. Aim
  >= 1.8x. The machine has 2 cores shared by the workers, PostgreSQL and this process.
* **context: claim_verify_many in-process**: the rate of the verification itself, in batches
  of ``JOBS_VERIFY_BATCH`` as a job runs it, so that the job machinery's own cost shows.
* **peak memory**: ``VmHWM`` of a fresh worker process that ran an ``{"all": true}`` job over
  the small size, then over the large one (10k and 100k claims; 2k and 20k with --quick). The
  claims beyond the re-verified ones are copies of them in state ``paid`` (made with one
  ``INSERT ... SELECT``): re-verifying 100k real claims takes longer than a bench run, and
  a paid claim goes through the same planning, chunking, result rows and counters (it is
  skipped, not verified). Aim: the large peak within 10 % of the small one (ratio >= 0.9).

Then the queries and a profile of ``chunk_process`` in-process: where a re-verified claim's
time goes.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_anchors import _trim_profile, ed25519_contenders
from bench.bench_claims import MEMBER, _factories, signed_bodies, submit_all
from bench.common import (
    BENCH_URL,
    QUICK,
    ROOT,
    Result,
    Row,
    Sizes,
    best,
    best_rates,
    fmt,
    spread,
    table,
)

NAME = "batch"
TITLE = "7. Batch re-verification jobs: 1 and 2 worker processes vs raw Ed25519; worker memory"
AIM_RATE, AIM_SCALE, AIM_MEMORY = 0.5, 1.8, 0.9
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
JOB_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class BatchSizes:
    claims: int  # real, signed claims re-verified by every timed job
    rounds: int
    memory_sizes: tuple[int, int]
    profiled: int


FULL_BATCH = BatchSizes(claims=1500, rounds=2, memory_sizes=(10_000, 100_000), profiled=200)
QUICK_BATCH = BatchSizes(claims=240, rounds=2, memory_sizes=(2_000, 20_000), profiled=60)


# --- processes ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private redis-server (no persistence) on a free port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="claimproof-bench-redis-")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Worker:
    """``celery -A config worker --pool=solo`` on the bench database and the private broker."""

    def __init__(self, broker: Broker, chunk_size: int, log: Path) -> None:
        from django.conf import settings

        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            DATABASE_URL=BENCH_URL,
            DJANGO_SETTINGS_MODULE="config.settings",
            CLAIMPROOF_VAR_DIR=str(settings.VAR_DIR),
            CELERY_BROKER_URL=broker.url,
            JOBS_CHUNK_SIZE=str(chunk_size),
            DEBUG="False",
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        out = open(log, "ab")  # noqa: SIM115 (the child keeps its own descriptor)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo",
             "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
             "--hostname", f"bench-{_free_port()}@%h"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out.close()
        self.log = log

    def peak_rss_mb(self) -> float:
        """The process's peak resident set size (``VmHWM``), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kb / 1024

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _point_app_at(url: str, queue: str = "celery") -> None:
    """This process sends its tasks to ``url`` (the private broker, then back)."""
    from config.celery import app

    app.conf.update(broker_url=url, task_default_queue=queue)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


def _start_workers(broker: Broker, count: int, chunk_size: int, logs: Path) -> list[Worker]:
    """``count`` workers, returned once each answers a ping (their start is not timed)."""
    from config.celery import app

    workers = [Worker(broker, chunk_size, logs / f"worker-{time.time_ns()}.log")]
    workers += [
        Worker(broker, chunk_size, logs / f"worker-{time.time_ns()}.log") for _ in range(count - 1)
    ]
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < count:
        for w in workers:
            if w.process.poll() is not None:
                raise RuntimeError(f"a worker exited: {w.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not answer a ping within 60 s")
    return workers


def _run_job(scope: dict) -> Any:
    """Start a job, wait for it to end; the job row (its own timing and counters)."""
    from jobs import services
    from jobs.models import BatchJob

    job = services.job_start(scope, None, reason="bench")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job.refresh_from_db()
        if job.status != BatchJob.Status.RUNNING and job.status != BatchJob.Status.QUEUED:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.pk} did not end within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    if job.status != BatchJob.Status.DONE:
        raise RuntimeError(f"job {job.pk} ended {job.status}")
    return job


def _job_rate(job) -> float:
    return job.done / (job.finished_at - job.started_at).total_seconds()


# --- claims -------------------------------------------------------------------------------------


def verified_claim_ids(kit, count: int) -> list[int]:
    """``count`` signed claims submitted and verified in-process; every one ``verified``."""
    from claims.states import ClaimStatus
    from claims.verification import claim_verify

    ids = submit_all(kit, signed_bodies(kit, count))
    for claim_id in ids:
        if claim_verify(claim_id=claim_id).status != ClaimStatus.VERIFIED:
            raise RuntimeError(f"claim {claim_id} did not verify")
    return ids


def add_paid_copies(provider_id: int, count: int) -> None:
    """``count`` more claims, copies of the provider's claims in state ``paid``, in one INSERT
    (every column of the model copied, but these)."""
    from django.db import connection

    from claims.models import Claim

    override = {
        "public_id": "gen_random_uuid()",
        "idempotency_key": "'bench-paid-' || gen_random_uuid()",
        "related_id": "NULL",
        "relationship": "''",
        "status": "'paid'",
        "waiting_since": "NULL",
        "updated_at": "now()",
    }
    columns = [f.column for f in Claim._meta.concrete_fields if not f.primary_key]
    values = ", ".join(override.get(c, f"s.{connection.ops.quote_name(c)}") for c in columns)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH src AS (
                SELECT *, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n
                FROM claims_claim WHERE provider_id = %s AND status <> 'paid'
            )
            INSERT INTO claims_claim ({names})
            SELECT {values}
            FROM generate_series(0, %s - 1) AS g JOIN src s ON s.k = g %% s.n
            """,
            [provider_id, count],
        )
        cursor.execute("ANALYZE claims_claim")


# --- the batch path in-process: queries and profile ----------------------------------------------


def claim_verify_rates(ids: list[int], rounds: int, batch: int) -> list[float]:
    """``claim_verify_many`` in-process, ``batch`` claims at a time, on a new run of each claim
    (started untimed), per round: the verification a job's worker runs, without the job."""
    from claims.verification import claim_reverify, claim_verify_many

    rates = []
    for _ in range(rounds):
        for claim_id in ids:  # queued on commit to the bench's filesystem broker, never read
            claim_reverify(claim_id=claim_id, reason="bench")
        t0 = time.perf_counter()
        for start in range(0, len(ids), batch):
            claim_verify_many(claim_ids=ids[start : start + batch])
        rates.append(len(ids) / (time.perf_counter() - t0))
    return rates


def profile_batch(scope: dict, count: int) -> tuple[float, float, str, float]:
    """Plan a job here in chunks of ``count // 3`` and run three: queries per re-verified claim
    in ``chunk_process`` (first chunk) against ``claim_verify_many`` alone on a fourth chunk's
    claims, and a cProfile of the other two with the share of time inside verification."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from claims.verification import claim_reverify, claim_verify_many
    from jobs import services
    from jobs.models import BatchChunk

    saved, settings.JOBS_CHUNK_SIZE = settings.JOBS_CHUNK_SIZE, max(1, count // 3)
    try:
        job = services.job_start(scope, None, reason="bench profile")
        chunks: list[int] = []
        services.job_plan(job.pk, dispatch=chunks.append)
    finally:
        settings.JOBS_CHUNK_SIZE = saved
    first = BatchChunk.objects.get(pk=chunks[0])
    with CaptureQueriesContext(connection) as ctx:
        services.chunk_process(first.pk)
    in_job = len(ctx.captured_queries) / len(first.ids)

    alone = BatchChunk.objects.get(pk=chunks[3]).ids
    for claim_id in alone:
        claim_reverify(claim_id=claim_id, reason="bench")
    with CaptureQueriesContext(connection) as ctx:
        claim_verify_many(claim_ids=alone)
    verify_only = len(ctx.captured_queries) / len(alone)

    profiler = cProfile.Profile()
    profiler.enable()
    for chunk_id in chunks[1:3]:
        services.chunk_process(chunk_id)
    profiler.disable()
    services.job_cancel(job)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(20)
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    inside = sum(
        v[3]
        for (path, _, name), v in raw.items()
        if path.endswith("claims/verification.py") and name == "claim_verify_many"
    )
    return in_job, verify_only, out.getvalue(), inside / total if total else float("nan")


# --- the benchmark ------------------------------------------------------------------------------


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    from django.conf import settings

    from claims.models import Claim
    from config.celery import app

    result = Result(NAME, TITLE)
    b = QUICK_BATCH if sizes == QUICK else FULL_BATCH
    # Claims an earlier benchmark of this run left (the same demo provider) are not this job's.
    Claim.objects.all().delete()
    kit = _factories().make_provider(MEMBER)
    scope = {"provider": kit.provider.pk}
    start = time.perf_counter()
    ids = verified_claim_ids(kit, b.claims)
    print(f"  {len(ids)} claims signed, submitted, verified ({time.perf_counter() - start:.0f} s)")

    # in-process, untimed by the jobs: the references and the profile
    ref_rates = best_rates(ed25519_contenders(sizes.ed25519_verifies), b.rounds)
    ref_name, ref_rate = max(((k, best(v)) for k, v in ref_rates.items()), key=lambda kv: kv[1])
    from jobs.services import verify_batch_size

    verify_rates = claim_verify_rates(ids[: min(len(ids), 400)], b.rounds, verify_batch_size())
    in_job, verify_only, profile_text, verify_share = profile_batch(scope, b.profiled)

    # real worker processes on a private broker
    chunk_size = max(10, min(200, b.claims // 12))  # several chunks per worker
    logs = Path(settings.VAR_DIR) / "bench-workers"
    logs.mkdir(parents=True, exist_ok=True)
    saved = {k: app.conf.get(k) for k in ("broker_url", "task_default_queue")}
    broker = Broker()
    one: list[float] = []
    two: list[float] = []
    peaks: dict[int, float] = {}
    try:
        _point_app_at(broker.url)
        for _ in range(b.rounds):
            for count, rates in ((1, one), (2, two)):
                workers = _start_workers(broker, count, chunk_size, logs)
                try:
                    job = _run_job(scope)
                finally:
                    for w in workers:
                        w.stop()
                if (job.done, job.passed) != (len(ids), len(ids)):
                    raise RuntimeError(f"job {job.pk}: {job.done} done, {job.passed} passed")
                rates.append(_job_rate(job))
                print(f"  {count} worker(s): {fmt(rates[-1])} claims/s (job {job.pk})", flush=True)

        for size in b.memory_sizes:  # one fresh worker per size
            have = Claim.objects.count()
            if size > have:
                add_paid_copies(kit.provider.pk, size - have)
            [worker] = _start_workers(broker, 1, settings.JOBS_CHUNK_SIZE, logs)
            try:
                idle = worker.rss_mb()
                t0 = time.perf_counter()
                job = _run_job({"all": True})
                seconds = time.perf_counter() - t0
                peaks[size] = worker.peak_rss_mb()
            finally:
                worker.stop()
            print(
                f"  memory: {job.total:,} claims ({job.passed:,} re-verified, {job.skipped:,} "
                f"skipped) in {seconds:.0f} s; worker RSS idle {idle:.0f} MiB, "
                f"peak {peaks[size]:.1f} MiB",
                flush=True,
            )
    finally:
        broker.stop()
        _point_app_at(saved["broker_url"], saved["task_default_queue"])

    r1, r2 = best(one), best(two)
    verified = best(verify_rates)
    small, large = b.memory_sizes
    result.rows += [
        Row(
            figure="job re-verification, 1 worker process (claims/s)",
            value=r1,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            aim=AIM_RATE,
            note=f"{len(ids)} claims, chunks of {chunk_size}",
        ),
        Row(
            figure="job re-verification, 2 worker processes (claims/s)",
            value=r2,
            unit="",
            reference="1 worker process",
            reference_value=r1,
            aim=AIM_SCALE,
            note=f"{os.cpu_count()} cores shared by the workers, PostgreSQL and the bench",
        ),
        Row(
            figure="context: job with 1 worker vs its verification alone (claims/s)",
            value=r1,
            unit="",
            reference="claim_verify_many in-process",
            reference_value=verified,
        ),
        Row(
            figure=f"worker peak RSS at {small:,} claims (MiB)",
            value=peaks[small],
            unit="",
            reference=f"peak RSS at {large:,} claims",
            reference_value=peaks[large],
            aim=AIM_MEMORY,
        ),
    ]
    result.details = {
        "load_average_1_5_15": os.getloadavg(),  # the machine is shared: how busy it was
        "claims": len(ids),
        "chunk_size": chunk_size,
        "cpus": os.cpu_count(),
        "rates_1_worker": one,
        "rates_2_workers": two,
        "claim_verify_many_in_process": verify_rates,
        "ed25519_rates": {k: best(v) for k, v in ref_rates.items()},
        "peak_rss_mb": peaks,
        "queries_per_claim_in_job": in_job,
        "queries_per_claim_verify": verify_only,
        "share_in_claim_verify": verify_share,
        "profile_top20": profile_text,
    }
    for name, values in ref_rates.items():
        print(f"  {name:<38} {fmt(best(values))} verifies/s ({spread(values)})")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"  load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores")
    print(f"  1 worker:  {fmt(r1)} claims/s ({spread(one)})")
    print(f"  2 workers: {fmt(r2)} claims/s ({spread(two)}); {r2 / r1:.2f}x one worker")
    print(f"  claim_verify_many in-process: {fmt(verified)} claims/s ({spread(verify_rates)})")
    print(
        f"  queries per re-verified claim: {in_job:.1f} in chunk_process, {verify_only:.1f} in "
        f"claim_verify_many alone; time inside claim_verify_many: {verify_share:.0%}"
    )
    rows = [[f"{k:,}", f"{v:.1f}"] for k, v in peaks.items()]
    print("  worker peak RSS:\n    " + table(["claims", "MiB"], rows).replace("\n", "\n    "))
    print("  cProfile of chunk_process, top 20 by cumulative time:")
    print("    " + _trim_profile(profile_text).replace("\n", "\n    "), flush=True)
    return result
