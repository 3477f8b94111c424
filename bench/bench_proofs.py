"""Benchmark 2: inclusion proofs served from PostgreSQL against pymerkle's in-memory proofs.

As the API does, each DB proof is ``proofs.inclusion`` + ``proofs.root_at`` at the latest tree
size, through one fresh ``HashReader``. The reference is ``InmemoryTree.prove_inclusion`` (and
``get_root``) on the same leaves. Rows read per proof are sampled at several tree sizes to show
they grow as log2 n; a sample of DB proofs is checked with ``merkle.verify_inclusion`` against
pymerkle's root of that size, and compared hash for hash with pymerkle's path.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

from bench import fixtures
from bench.common import (
    Result,
    Row,
    Sizes,
    best,
    best_rates,
    fmt,
    round_trips,
    spread,
    table,
)

NAME = "proofs"
TITLE = "2. Inclusion proofs from PostgreSQL vs pymerkle in-memory prove_inclusion"
AIM = 1.0


def db_proof(index: int, size: int, sealed: int) -> tuple[list[bytes], bytes, int]:
    """One proof as the API serves it: path, root, and the rows it read."""
    from ledger import proofs

    reader = proofs.HashReader()
    path = proofs.inclusion(index, size, sealed_size=sealed, reader=reader)
    root = proofs.root_at(size, sealed_size=sealed, reader=reader)
    return path, root, reader.rows_read


def _log(state: dict[str, Any], size: int) -> fixtures.SealedLog:
    """The sealed log the seal benchmark left behind, else a fresh one (built untimed)."""
    log = state.get("log")
    if log is None or log.size != size:
        state.pop("log", None)
        print(f"  building a sealed log of {size:,} leaves (not timed)...", flush=True)
        log = fixtures.build_sealed_log(size)
        state["log"] = log
    return log


def _rates(log: fixtures.SealedLog, sizes: Sizes) -> dict[str, list[float]]:
    rng = random.Random(1)
    count, size, tree = sizes.proofs_per_round, log.size, log.pymerkle_tree

    def from_db() -> int:
        for i in rng.choices(range(size), k=count):
            db_proof(i, size, size)
        return count

    def from_pymerkle() -> int:
        for i in rng.choices(range(size), k=count):
            tree.prove_inclusion(i + 1, size)
            tree.get_root(size)
        return count

    from_db(), from_pymerkle()  # warm the caches of both sides alike
    contenders = {"db": from_db, "pymerkle": from_pymerkle, "select1": round_trips(count)}
    return best_rates(contenders, sizes.rounds)


def _rows_read(log: fixtures.SealedLog, sizes: Sizes) -> list[dict[str, Any]]:
    """Rows read per proof (inclusion + root) at each tree size, over random leaves."""
    rng = random.Random(2)
    out = []
    for size in sizes.row_sizes:
        rows = [
            db_proof(i, size, log.size)[2] for i in rng.choices(range(size), k=sizes.row_samples)
        ]
        out.append(
            {
                "tree_size": size,
                "log2_n": math.log2(size),
                "mean": statistics.fmean(rows),
                "max": max(rows),
                "samples": len(rows),
            }
        )
    return out


def _verify_sample(log: fixtures.SealedLog, sizes: Sizes) -> int:
    """Check DB proofs with merkle.verify_inclusion and against pymerkle; how many passed."""
    from ledger import merkle

    rng = random.Random(3)
    tree, checked = log.pymerkle_tree, 0
    per_size = max(1, sizes.verify_samples // len(sizes.row_sizes))
    for size in sizes.row_sizes:
        expected_root = tree.get_root(size)
        for i in rng.choices(range(size), k=per_size):
            path, root, _ = db_proof(i, size, log.size)
            if root != expected_root:
                raise RuntimeError(f"root at size {size} differs from pymerkle's")
            merkle.verify_inclusion(i, size, log.leaf_hashes[i], path, root)
            if path != tree.prove_inclusion(i + 1, size).path[1:]:
                raise RuntimeError(f"proof of leaf {i} in size {size} differs from pymerkle's")
            checked += 1
    return checked


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    result = Result(NAME, TITLE)
    log = _log(state, sizes.proof_size)
    rates = _rates(log, sizes)
    result.rows.append(
        Row(
            figure=f"proofs/s from PostgreSQL, n={log.size:,}",
            value=best(rates["db"]),
            unit="",
            reference="pymerkle prove_inclusion",
            reference_value=best(rates["pymerkle"]),
            aim=AIM,
        )
    )
    result.rows.append(
        Row(
            figure="context: SELECT 1 round trips, raw psycopg (/s)",
            value=best(rates["select1"]),
            unit="",
            reference="pymerkle prove_inclusion",
            reference_value=best(rates["pymerkle"]),
            note="one round trip per proof could reach this",
        )
    )
    rows = _rows_read(log, sizes)
    verified = _verify_sample(log, sizes)
    result.details = {
        "tree_size": log.size,
        "rates": rates,
        "rows_read": rows,
        "verified_proofs": verified,
    }
    print(f"  DB proofs/s per round:       {spread(rates['db'])}")
    print(f"  pymerkle proofs/s per round: {spread(rates['pymerkle'])}")
    print(f"  SELECT 1 round trips/s:      {spread(rates['select1'])}")
    print("  rows read per proof (inclusion + root at that size, one HashReader):")
    body = [
        [
            f"{r['tree_size']:,}",
            f"{r['log2_n']:.1f}",
            fmt(r["mean"]),
            str(r["max"]),
            f"{r['mean'] / r['log2_n']:.2f}",
            str(r["samples"]),
        ]
        for r in rows
    ]
    headers = ["tree size n", "log2 n", "mean rows", "max rows", "mean/log2 n", "samples"]
    print("    " + table(headers, body).replace("\n", "\n    "))
    print(
        f"  {verified} DB proofs verified with merkle.verify_inclusion and equal pymerkle's "
        "paths and roots",
        flush=True,
    )
    return result
