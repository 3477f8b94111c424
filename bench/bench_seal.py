"""Benchmark 1: sealing N pending leaves into PostgreSQL against pymerkle's in-memory append.

``services.ledger_seal(max_leaves=N)`` reads the N pending leaf hashes, hashes every new interior
node, writes them with COPY and signs a checkpoint, in one transaction: that call alone is timed.
The reference appends the same N leaf data to a pymerkle 7 ``InmemoryTree`` (RFC 9162 hashing).
Both must reach the same root hash.
"""

from __future__ import annotations

import gc
from typing import Any

from bench import fixtures
from bench.common import Result, Row, Sizes, fmt, timed

NAME = "seal"
TITLE = "1. Sealing N pending leaves into PostgreSQL vs pymerkle in-memory append"
AIM = 1.0


def _seal_once(n: int) -> tuple[dict[str, Any], fixtures.SealedLog]:
    """Seal ``n`` pending leaves (timed), append them to pymerkle (timed), compare roots."""
    from ledger import services
    from ledger.models import TreeNode

    fixtures.reset_ledger()
    pending = fixtures.synthetic_leaves(n, fixtures.anchor_members())
    hashes = fixtures.copy_pending(pending)
    fixtures.settle()

    seal_s, checkpoint = timed(lambda: services.ledger_seal(max_leaves=n))
    if checkpoint is None or checkpoint.size != n:
        raise RuntimeError(f"the seal did not reach size {n}: {checkpoint}")
    tree = fixtures.pymerkle_tree()
    pymerkle_s, _ = timed(lambda: tree.append_entries(pending.data))

    root = bytes(checkpoint.root_hash)
    agree = tree.get_root() == root
    if not agree:
        raise RuntimeError(f"root hashes differ at N={n}: pymerkle and ledger_seal disagree")
    log = fixtures.SealedLog(n, root, pending.data, hashes, tree)
    figures = {
        "n": n,
        "seal_s": seal_s,
        "pymerkle_s": pymerkle_s,
        "nodes_written": TreeNode.objects.count(),
        "root": root.hex(),
        "roots_agree": agree,
    }
    return figures, log


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    result = Result(NAME, TITLE)
    for n in sizes.seal_sizes:
        state.pop("log", None)  # free the previous pymerkle tree before timing the next seal
        gc.collect()
        figures, log = _seal_once(n)
        result.details[str(n)] = figures
        result.rows.append(
            Row(
                figure=f"ledger_seal, N={n:,} (leaves/s)",
                value=n / figures["seal_s"],
                unit="",
                reference="pymerkle InmemoryTree append",
                reference_value=n / figures["pymerkle_s"],
                aim=AIM,
                note=f"{figures['seal_s']:.2f} s vs {figures['pymerkle_s']:.2f} s",
            )
        )
        print(
            f"  N={n:>9,}: seal {figures['seal_s']:.2f} s ({fmt(n / figures['seal_s'])} "
            f"leaves/s, {figures['nodes_written']:,} tree nodes written), pymerkle "
            f"{figures['pymerkle_s']:.2f} s; root hashes agree: {figures['root'][:16]}...",
            flush=True,
        )
        state["log"] = log
    return result
