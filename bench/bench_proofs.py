"""Benchmark 2: inclusion proofs served from PostgreSQL against pymerkle's in-memory proofs.

Ways of serving a proof at the latest tree size, each against pymerkle's
``InmemoryTree.prove_inclusion`` (+ ``get_root``) on the same leaves, in the same run:

* cold: the tile cache off; ``proofs.inclusion_with_root`` through one fresh ``HashReader``
  (path and root planned together: one round trip). The same work the figure measured before;
* cold, served: what the API does with the cache off: ``proofs.signed_roots`` (latest checkpoint
  and the leaf's hash, one round trip) then ``proofs.served_inclusion`` (one more);
* warm, served: what the API does with the cache on and warm: ``signed_roots``, then the proof
  from the tile cache, checked with ``merkle.verify_inclusion`` against the checkpoint's root.

Context rows: the proof and root from the warm cache alone (the in-memory work pymerkle does, no
round trip), the API path with a cache much smaller than the tree, and raw ``SELECT 1``.

Rows read per cold proof are sampled at several tree sizes to show they grow as log2 n; a sample
of proofs (cold, and through the tile cache) is checked with ``merkle.verify_inclusion`` and
compared hash for hash with pymerkle's path and root.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
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
SMALL_CACHE_MB = 8  # a cache much smaller than the tree, for contrast


def db_proof(index: int, size: int, sealed: int) -> tuple[list[bytes], bytes, int]:
    """One cold proof (no tile cache): path, root, and the rows it read."""
    from ledger import proofs

    reader = proofs.HashReader()
    path, root = proofs.inclusion_with_root(index, size, sealed_size=sealed, reader=reader)
    return path, root, reader.rows_read


def served_proof(index: int) -> tuple[list[bytes], bytes]:
    """One proof at the latest size, as the API serves it (the cache as settings say)."""
    from ledger import proofs

    signed = proofs.signed_roots([], leaf_index=index)
    return proofs.served_inclusion(index, signed.sealed_size, signed)


def _log(state: dict[str, Any], size: int) -> fixtures.SealedLog:
    """The sealed log the seal benchmark left behind, else a fresh one (built untimed)."""
    log = state.get("log")
    if log is None or log.size != size:
        state.pop("log", None)
        print(f"  building a sealed log of {size:,} leaves (not timed)...", flush=True)
        log = fixtures.build_sealed_log(size)
        state["log"] = log
    return log


def _warm(size: int) -> None:
    """Fill the tile cache the way the API does: one served proof per 256-leaf tile touches
    every tile of every level once (untimed)."""
    for index in range(0, size, 256):
        served_proof(index)


def _rates(log: fixtures.SealedLog, sizes: Sizes) -> tuple[dict[str, list[float]], dict]:
    from django.conf import settings

    from ledger import proofs

    rng = random.Random(1)
    count, size, tree = sizes.proofs_per_round, log.size, log.pymerkle_tree
    default_mb = getattr(settings, "LEDGER_TILE_CACHE_MB", 64)

    def cold() -> int:
        for i in rng.choices(range(size), k=count):
            db_proof(i, size, size)
        return count

    def served(mb: float) -> Callable[[], int]:
        def run() -> int:
            settings.LEDGER_TILE_CACHE_MB = mb  # 0: shared_cache() is None, the cache stays
            try:
                for i in rng.choices(range(size), k=count):
                    served_proof(i)
            finally:
                settings.LEDGER_TILE_CACHE_MB = default_mb
            return count

        return run

    def latest() -> int:
        """The API's default path: the latest checkpoint, trusted for LEDGER_CHECKPOINT_TTL_S."""
        for i in rng.choices(range(size), k=count):
            if proofs.served_latest_inclusion(i) is None:
                raise RuntimeError(f"the fast lane refused leaf {i}")
        return count

    def cached() -> int:
        for i in rng.choices(range(size), k=count):
            reader = proofs.TileReader(tiles=proofs.shared_cache())
            proofs.inclusion_with_root(i, size, sealed_size=size, reader=reader)
        return count

    def from_pymerkle() -> int:
        for i in rng.choices(range(size), k=count):
            tree.prove_inclusion(i + 1, size)
            tree.get_root(size)
        return count

    print("  warming the tile cache: one served proof per 256 leaves (not timed)...", flush=True)
    cache = proofs.shared_cache()
    cache.clear()
    _warm(size)
    cold(), from_pymerkle()  # warm PostgreSQL's buffers and pymerkle alike
    before = dict(cache.stats())
    contenders = {
        "cold": cold,
        "served_cold": served(0),
        "warm": served(default_mb),
        "latest": latest,
        "cached": cached,
        "pymerkle": from_pymerkle,
        "select1": round_trips(count),
    }
    rates = best_rates(contenders, sizes.rounds)
    after = cache.stats()
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    stats: dict[str, Any] = {
        "cache_mb": default_mb,
        "tiles": after["tiles"],
        "bytes": after["bytes"],
        "hit_rate": hits / (hits + misses) if hits + misses else float("nan"),
        "misses": misses,
        "clears": after["clears"] - before["clears"],
        "evictions": after["evictions"],
    }
    # Contrast: a cache much smaller than the tree, random leaves (the shared cache is rebuilt).
    settings.LEDGER_TILE_CACHE_MB = SMALL_CACHE_MB
    small = proofs.shared_cache()
    settings.LEDGER_TILE_CACHE_MB = default_mb
    served(SMALL_CACHE_MB)()  # untimed: fill it
    before = dict(small.stats())
    more = best_rates({"warm_small": served(SMALL_CACHE_MB), "pymerkle_small": from_pymerkle}, 2)
    after = small.stats()
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    stats["small"] = {
        "cache_mb": SMALL_CACHE_MB,
        "bytes": after["bytes"],
        "hit_rate": hits / (hits + misses) if hits + misses else float("nan"),
        "evictions": after["evictions"],
    }
    return {**rates, **more}, stats


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
    """Check proofs, cold and through the tile cache, with merkle.verify_inclusion and against
    pymerkle; how many passed."""
    from ledger import merkle, proofs

    rng = random.Random(3)
    tree, checked = log.pymerkle_tree, 0
    per_size = max(1, sizes.verify_samples // len(sizes.row_sizes))
    for size in sizes.row_sizes:
        expected_root = tree.get_root(size)
        for i in rng.choices(range(size), k=per_size):
            path, root, _ = db_proof(i, size, log.size)
            cached = proofs.TileReader(tiles=proofs.shared_cache())
            if (path, root) != proofs.inclusion_with_root(
                i, size, sealed_size=log.size, reader=cached
            ):
                raise RuntimeError(f"cached proof of leaf {i} in size {size} differs from cold")
            if size == log.size and (path, root) != served_proof(i):
                raise RuntimeError(f"served proof of leaf {i} differs from cold")
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
    rates, cache = _rates(log, sizes)
    pymerkle = best(rates["pymerkle"])
    ref = "pymerkle prove_inclusion"

    def row(figure: str, key: str, aim: float | None = AIM, reference: float = pymerkle) -> Row:
        return Row(figure, best(rates[key]), "", ref, reference, aim=aim)

    n = f"n={log.size:,}"
    result.rows += [
        row(f"cold proofs/s (no cache, 1 round trip), {n}", "cold"),
        row(f"served proofs/s, latest tree (API default: tiles + checkpoint TTL), {n}", "latest"),
        row(f"warm proofs/s, explicit tree_size (tiles + signed read + verify), {n}", "warm", None),
        row("context: proof + root from the warm cache alone (no DB)", "cached", None),
        row("context: API path, cache off (2 round trips)", "served_cold", None),
        row(
            f"context: API path, {SMALL_CACHE_MB} MiB cache, random leaves",
            "warm_small",
            None,
            best(rates["pymerkle_small"]),
        ),
        row("context: SELECT 1 round trips, raw psycopg (/s)", "select1", None),
    ]
    rows = _rows_read(log, sizes)
    verified = _verify_sample(log, sizes)
    result.details = {
        "tree_size": log.size,
        "rates": rates,
        "cache": cache,
        "rows_read": rows,
        "verified_proofs": verified,
    }
    for label, key in [
        ("cold", "cold"),
        ("served, latest tree (API default)", "latest"),
        ("warm (API path)", "warm"),
        ("proof + root from the cache alone", "cached"),
        ("API path, cache off", "served_cold"),
        (f"API path, {SMALL_CACHE_MB} MiB cache", "warm_small"),
        ("pymerkle", "pymerkle"),
        ("SELECT 1 round trips", "select1"),
    ]:
        print(f"  {label + ' /s per round:':36} {spread(rates[key])}")
    small = cache["small"]
    print(
        f"  tile cache ({cache['cache_mb']} MiB): {cache['tiles']:,} tiles, "
        f"{cache['bytes'] / 2**20:.1f} MiB, hit rate {cache['hit_rate']:.2%} over the timed "
        f"warm rounds ({cache['misses']:,} misses), {cache['evictions']:,} evictions, "
        f"{cache['clears']} clears"
    )
    print(
        f"  small tile cache ({small['cache_mb']} MiB): {small['bytes'] / 2**20:.1f} MiB, "
        f"hit rate {small['hit_rate']:.2%}, {small['evictions']:,} evictions"
    )
    print("  rows read per cold proof (inclusion + root at that size, one HashReader):")
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
        f"  {verified} proofs (cold, and through the tile cache) verified with "
        "merkle.verify_inclusion and equal pymerkle's paths and roots",
        flush=True,
    )
    return result
