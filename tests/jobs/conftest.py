"""Real processes for the jobs tests: a private ``redis-server`` on a port of its own (the
machine's Redis on 6379 is shared and never restarted or flushed here) and Celery worker
processes (``celery -A config worker --pool=solo``) on the test PostgreSQL database.

The test database is the one pytest-django made; a worker process sees only committed data, so
tests using these fixtures are ``django_db(transaction=True)``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kombu import pools

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A throwaway redis-server: no RDB, no AOF, so a restart loses every queued message."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="claimproof-redis-")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what a crash (or an OOM kill) does; nothing is saved."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"{REDIS_SERVER} is not installed")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Worker:
    """One ``celery -A config worker`` process (its own session, so a kill takes its whole
    process group): ``--pool=solo`` runs tasks in that process, ``--pool=prefork`` in one child."""

    env: dict[str, str]
    log_path: Path
    pool: str = "solo"
    process: subprocess.Popen | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed below; the child keeps its fd)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", f"--pool={self.pool}",
             "--concurrency=1", "--loglevel=INFO", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pool_children(self) -> list[int]:
        """The pids of the prefork pool's processes (none with ``--pool=solo``)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL, mid-whatever: no handler runs, no message is acknowledged."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-3000:]


class Workers:
    """Starts worker processes on the test database and ``broker``; stops them all at the end."""

    def __init__(self, broker_url: str, database_url: str, settings) -> None:
        self.var = Path(tempfile.mkdtemp(prefix="claimproof-worker-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DJANGO_"))}
        self.env.update(
            DJANGO_SETTINGS_MODULE="tests.jobs.worker_settings",
            PYTHONPATH=str(ROOT),
            CLAIMPROOF_VAR_DIR=str(self.var),
            DATABASE_URL=database_url,
            CONN_MAX_AGE="0",
            CELERY_BROKER_URL=broker_url,
            LEDGER_KEYS_DIR=str(settings.LEDGER_KEYS_DIR),
            LEDGER_OPERATOR_KEY_FILE=str(settings.LEDGER_OPERATOR_KEY_FILE),
            LEDGER_CHECKPOINT_TTL_S="0",
            LOG_LEVEL="WARNING",
            DEBUG="False",
        )
        self.settings = settings
        self.started: list[Worker] = []

    def start(self, *, pool: str = "solo", visibility_timeout_s: int = 3) -> Worker:
        """A new worker process (with the test's JOBS_CHUNK_SIZE and JOBS_VERIFY_BATCH now)."""
        env = {
            **self.env,
            "JOBS_CHUNK_SIZE": str(self.settings.JOBS_CHUNK_SIZE),
            "JOBS_VERIFY_BATCH": str(getattr(self.settings, "JOBS_VERIFY_BATCH", 200)),
            "TEST_VISIBILITY_TIMEOUT_S": str(visibility_timeout_s),
        }
        log = self.var / f"worker-{len(self.started)}.log"
        worker = Worker(env, log, pool).start()
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"--- worker {i}\n{w.log_tail()}" for i, w in enumerate(self.started))


def test_database_url() -> str:
    """The URL of the database pytest-django made for this run (inside a django_db test)."""
    from django.db import connection

    return urlparse(PG_URL)._replace(path=f"/{connection.settings_dict['NAME']}").geturl()


@pytest.fixture
def broker(private_redis, settings) -> Iterator[RedisServer]:
    """This process sends its tasks to the private Redis too (default queue ``celery``)."""
    from config.celery import app

    saved = {k: app.conf.get(k) for k in ("broker_url", "task_default_queue", "task_always_eager")}

    def repoint(**conf) -> None:
        app.conf.update(**conf)
        if app._pool is not None:  # connections to the old broker
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None
        # kombu keeps producer pools per broker URL in a global registry: the old broker's pool
        # was closed above, and would be handed out again when the URL is restored
        pools.reset()

    settings.CELERY_BROKER_URL = private_redis.url
    repoint(broker_url=private_redis.url, task_default_queue="celery", task_always_eager=False)
    try:
        yield private_redis
    finally:
        repoint(**saved)


@pytest.fixture
def workers(broker, settings) -> Iterator[Workers]:
    """``workers.start()`` starts a worker process; all are stopped when the test ends (before
    pytest-django empties the database)."""
    pool = Workers(broker.url, test_database_url(), settings)
    try:
        yield pool
    finally:
        pool.stop_all()
