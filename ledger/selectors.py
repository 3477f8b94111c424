"""Reads worth a name."""

from __future__ import annotations

from config.errors import NotFound
from ledger.merkle import MAX_SIZE
from ledger.models import Checkpoint, Leaf


def leaf_get(index: int) -> Leaf:
    leaf = (
        Leaf.objects.select_related("member").filter(index=index).first()
        if 0 <= index <= MAX_SIZE
        else None
    )
    if leaf is None:
        raise NotFound(f"the log has no leaf {index}", code="unknown_leaf")
    return leaf


def leaf_index_by_hash(leaf_hash: bytes) -> int:
    index = Leaf.objects.filter(leaf_hash=leaf_hash).values_list("index", flat=True).first()
    if index is None:
        raise NotFound("no leaf has this hash", code="unknown_leaf")
    return index


def leaf_hash_at(index: int) -> bytes:
    h = Leaf.objects.filter(index=index).values_list("leaf_hash", flat=True).first()
    if h is None:
        raise NotFound(f"the log has no leaf {index}", code="unknown_leaf")
    return bytes(h)


def checkpoint_history(limit: int = 200) -> list[tuple]:
    """(created_at, size) of the newest checkpoints, oldest first: the tree's growth."""
    rows = Checkpoint.objects.order_by("-size").values_list("created_at", "size")[:limit]
    return list(reversed(rows))
