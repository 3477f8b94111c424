"""Real node processes on 127.0.0.1: a second ClaimProof node (gunicorn) acting as a witness, with
its own var/ directory and its own database on the test PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from ledger.keys import witness_key_env
from tests.conftest import PG_URL, SERVICES

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_url() -> str:
    parts = urlparse(PG_URL)
    return parts._replace(scheme="postgresql", path="/postgres").geturl()


@pytest.fixture(scope="session")
def node_database() -> Iterator[str]:
    """A migrated database of its own for the witness node processes (dropped at the end)."""
    if SERVICES.get("postgres"):
        pytest.skip(f"postgres missing: {SERVICES['postgres']}")
    name = f"claimproof_node_{os.environ.get('TOX_PARALLEL_ENV', 'x')}_{os.getpid()}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlparse(PG_URL)._replace(path=f"/{name}").geturl()
    var = tempfile.mkdtemp(prefix="claimproof-node-migrate-")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**_base_env(var), "DATABASE_URL": url},
        check=True,
        timeout=120,
    )
    try:
        yield url
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _base_env(var: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.consortium.node_settings",
        CLAIMPROOF_VAR_DIR=var,
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
    )
    return env


@dataclass
class WitnessNode:
    """A witness node process: ``start()`` / ``stop()`` as often as a test needs."""

    database_url: str
    name: str
    signer_key: str
    logs: dict[str, str]
    workers: int = 2
    port: int = field(default_factory=free_port)
    var: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="claimproof-node-"))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = _base_env(self.var)
        env.update(
            DATABASE_URL=self.database_url,
            LEDGER_WITNESS_NAME=self.name,
            LEDGER_WITNESS_LOGS=json.dumps(self.logs),
        )
        env[witness_key_env(self.name)] = self.signer_key
        log = open(Path(self.var) / "gunicorn.log", "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                "4",
                "--timeout",
                "30",
                "--graceful-timeout",
                "2",
                "--no-control-socket",  # gunicorn 27: else one shared socket path per user
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the witness node exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(self.url + "/add-checkpoint", timeout=1)  # noqa: S310
            except urllib.error.HTTPError as exc:
                if exc.code == 405:  # up: add-checkpoint is POST only
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the witness node did not start in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would: no graceful shutdown, requests in flight."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self) -> str:
        path = Path(self.var) / "gunicorn.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@pytest.fixture
def witness_nodes(node_database) -> Iterator[list[WitnessNode]]:
    """Witness nodes a test makes (append to the list); every one is stopped at the end."""
    nodes: list[WitnessNode] = []
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()
