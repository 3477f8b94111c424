"""`make run`: the web server, a Celery worker and Celery beat, side by side until Ctrl-C.

If any of the three stops, the others are stopped too, so a broken worker is never hidden behind a
page that still answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if this supervisor dies, so nothing is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main() -> int:
    var = Path(os.environ.get("CLAIMPROOF_VAR_DIR", ROOT / "var"))
    (var / "log").mkdir(parents=True, exist_ok=True)
    commands = {
        "web": [
            str(BIN / "gunicorn"),
            "config.wsgi",
            f"--bind={HOST}:{PORT}",
            "--workers=2",
            "--threads=4",
            "--access-logfile=-",
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "--hostname=worker@%h",
        ],
        "beat": [
            str(BIN / "celery"),
            "-A",
            "config",
            "beat",
            "--loglevel=INFO",
            f"--schedule={var / 'celerybeat-schedule'}",
            f"--pidfile={var / 'celerybeat.pid'}",
        ],
    }
    (var / "celerybeat.pid").unlink(missing_ok=True)
    procs = {
        name: subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_die_with_parent)
        for name, cmd in commands.items()
    }
    time.sleep(2)
    logins = var / "demo-logins.txt"
    print(f"\n  ClaimProof is running: http://{HOST}:{PORT}/ (log in as below)", flush=True)
    print(
        f"  Ledger page: http://{HOST}:{PORT}/ledger/   API docs: http://{HOST}:{PORT}/api/v1/docs"
    )
    if logins.exists():
        print("  Demo logins (the workspace at /, the Django admin at /admin/ for admin):")
        for line in logins.read_text().splitlines():
            print(f"    {line}")
    print("  Ctrl-C stops the web server, the worker and beat.\n", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"\n  {name} stopped (exit {proc.returncode}); stopping the others.")
                exit_code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
