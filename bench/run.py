"""Run the ledger benchmarks against the machine's PostgreSQL and print every figure beside its
reference, measured in the same run, as a ratio.

    .venv/bin/python bench/run.py [--quick] [--only NAME] [--strict]

The bench database ``claimproof_bench`` is dropped and created at the start and dropped at the
end; keys go to a temporary directory. Results are also written to var/bench/results.json.
Exit status: 0, or 1 with ``--strict`` when an aim is not met, or 2 when PostgreSQL is down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402  (needs the repository root on sys.path)

# Each name is a module bench/bench_<name>.py with NAME, TITLE and run(sizes, state).
BENCHMARKS = [
    "seal",
    "proofs",
    "anchors",
    "audit",
    "claims",
    "intake",
    "e2e",
    "batch",
    "queue",
    "witness",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when an aim is not met")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "var" / "bench" / "results.json",
        help="where to write the results (default var/bench/results.json)",
    )
    return parser.parse_args(argv)


def modules(names: list[str]) -> list[ModuleType]:
    """The benchmark modules, imported only once Django is set up."""
    import importlib

    return [importlib.import_module(f"bench.bench_{n}") for n in BENCHMARKS if n in names]


def run_all(args: argparse.Namespace) -> list[common.Result]:
    sizes = common.QUICK if args.quick else common.FULL
    state: dict[str, Any] = {}
    results = []
    for module in modules(args.only or BENCHMARKS):
        print(f"\n== {module.TITLE}", flush=True)
        start = time.perf_counter()
        result = module.run(sizes, state)
        result.seconds = time.perf_counter() - start
        print("\n" + common.rows_table(result.rows))
        print(f"({result.seconds:.0f} s)", flush=True)
        results.append(result)
    return results


def summary(results: list[common.Result], seconds: float, args: argparse.Namespace) -> str:
    rows = [
        [
            f"{r.name}: {row.figure}",
            common.ratio_text(row.ratio),
            "-" if row.aim is None else f">= {row.aim:g}x",
            common.met_text(row.met),
        ]
        for r in results
        for row in r.rows
    ]
    mode = "quick" if args.quick else "full"
    head = f"== Summary ({mode} run, {seconds:.0f} s; ratio = figure / reference, same run)"
    return head + "\n" + common.table(["figure", "ratio", "aim", "met?"], rows)


def write_json(path: Path, results: list[common.Result], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "benchmarks": {r.name: r.as_dict() for r in results}}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        version = common.check_postgres()
    except common.PostgresDown as exc:
        print(
            f"bench: {exc}\nbench: start PostgreSQL (see README.md) and run again.", file=sys.stderr
        )
        return 2
    started, start = datetime.now(UTC), time.perf_counter()
    print(f"PostgreSQL {version}; database {common.BENCH_DB} recreated", flush=True)
    common.recreate_database()
    try:
        with tempfile.TemporaryDirectory(prefix="claimproof-bench-") as var_dir:
            common.setup_django(Path(var_dir))
            server = common.server_settings()
            results = run_all(args)
    finally:
        common.drop_database()
    seconds = time.perf_counter() - start
    print("\n" + summary(results, seconds, args))
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "seconds": round(seconds, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": server,
        },
    }
    write_json(args.json, results, meta)
    print(f"results written to {args.json}")
    unmet = [row for r in results for row in r.rows if row.met is False]
    return 1 if args.strict and unmet else 0


if __name__ == "__main__":
    sys.exit(main())
