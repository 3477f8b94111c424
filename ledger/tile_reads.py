"""Tiles and entry bundles of the sealed tree, read from the stored rows (one range scan each).

Tile level ``L`` is Merkle level ``8·L``: ``Leaf.leaf_hash`` for ``L = 0``, ``TreeNode`` rows of
``level = 8·L`` above. Only what the latest checkpoint covers is ever read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import tlog_tiles
from ledger.models import Checkpoint, Leaf, TreeNode


class NoSuchTile(LookupError):
    """The latest checkpoint does not cover that tile (or the log has no checkpoint)."""


@dataclass(frozen=True)
class TileData:
    data: bytes
    full: bool


def latest_size() -> int | None:
    return Checkpoint.objects.order_by("-size").values_list("size", flat=True).first()


def _covered(level: int, index: int, width: int) -> tuple[int, int]:
    """The index range ``[lo, hi)`` of Merkle level ``8·level`` the tile holds, if covered."""
    size = latest_size()
    if size is None:
        raise NoSuchTile("the log has no checkpoint yet")
    lo = index * tlog_tiles.WIDTH
    hi = lo + width
    if hi > tlog_tiles.hashes_at(level, size):
        raise NoSuchTile(f"the latest checkpoint (size {size}) does not cover this tile")
    return lo, hi


def read_tile(level: int, index: int, width: int) -> TileData:
    """The packed hashes of hash tile ``(level, index)`` of ``width`` hashes."""
    lo, hi = _covered(level, index, width)
    if level == 0:
        rows = Leaf.objects.filter(index__gte=lo, index__lt=hi).order_by("index")
        hashes = rows.values_list("leaf_hash", flat=True)
    else:
        rows = TreeNode.objects.filter(level=tlog_tiles.HEIGHT * level, index__gte=lo, index__lt=hi)
        hashes = rows.order_by("index").values_list("hash", flat=True)
    data = b"".join(bytes(h) for h in hashes)
    if len(data) != width * tlog_tiles.HASH_SIZE:
        raise RuntimeError(f"tile {level}/{index} is missing stored hashes")
    return TileData(data, full=width == tlog_tiles.WIDTH)


def read_entries(index: int, width: int) -> TileData:
    """The entry bundle ``index``: the statements of leaves ``[256·index, 256·index + width)``."""
    lo, hi = _covered(0, index, width)
    rows = Leaf.objects.filter(index__gte=lo, index__lt=hi).order_by("index")
    entries = [bytes(d) for d in rows.values_list("data", flat=True)]
    if len(entries) != width:
        raise RuntimeError(f"entry bundle {index} is missing leaves")
    return TileData(tlog_tiles.encode_bundle(entries), full=width == tlog_tiles.WIDTH)
