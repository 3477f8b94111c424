"""A bounded, thread-safe cache of tiles of stored subtree hashes (pure: no Django).

A tile is ``(level, index >> tile_bits)`` → the packed 32-byte hashes of that level's indexes
``[t << tile_bits, (t << tile_bits) + w)``, exactly as stored. Stored hashes never change (the
ledger is append-only and a trigger enforces it), so the ``w`` hashes of a cached tile stay true
while the database they came from lives; a lookup beyond the cached width is a miss, and the tile
is read again, wider. What this cache cannot know is that the database was replaced under it (a
restored backup, a test run resetting its database): ``proofs.served_inclusion`` and
``proofs.served_consistency`` check every proof built from it against a signed checkpoint and
clear it when one fails (docs/ledger.md, "The tile cache").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

HASH_SIZE = 32
TILE_BITS = 8  # 256 hashes a tile, as C2SP tlog-tiles cuts them
ENTRY_OVERHEAD = 160  # what a cached tile costs beyond its hashes: key, bytes header, LRU links

Subtree = tuple[int, int]  # (level, index)
Tile = tuple[int, int]  # (level, index >> tile_bits)


class TileCache:
    """Least-recently-used tiles, bounded by the bytes they hold (hashes + a fixed overhead)."""

    def __init__(self, max_bytes: int, tile_bits: int = TILE_BITS) -> None:
        self.max_bytes = max_bytes
        self.tile_bits = tile_bits
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.clears = 0
        self._tiles: OrderedDict[Tile, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tiles)

    def tile_range(self, tile: Tile) -> tuple[int, int, int]:
        """``(level, lo, hi)``: the indexes ``[lo, hi)`` of that level a full tile holds."""
        level, t = tile
        return level, t << self.tile_bits, (t + 1) << self.tile_bits

    def lookup(self, subtrees: Iterable[Subtree]) -> tuple[dict[Subtree, bytes], set[Tile]]:
        """The hashes of ``subtrees`` the cache holds, and the tiles to read for the others."""
        bits, mask = self.tile_bits, (1 << self.tile_bits) - 1
        found: dict[Subtree, bytes] = {}
        missing: set[Tile] = set()
        asked = 0
        with self._lock:
            tiles = self._tiles
            for level, index in subtrees:
                asked += 1
                key = (level, index >> bits)
                packed = tiles.get(key)
                end = ((index & mask) + 1) * HASH_SIZE
                if packed is not None and len(packed) >= end:
                    found[(level, index)] = packed[end - HASH_SIZE : end]
                    tiles.move_to_end(key)
                else:
                    missing.add(key)
            self.hits += len(found)
            self.misses += asked - len(found)
        return found, missing

    def put(self, tile: Tile, packed: bytes) -> None:
        """Keep ``packed`` (the tile's first ``len(packed) // 32`` hashes, as read just now)."""
        cost = len(packed) + ENTRY_OVERHEAD
        if not packed or cost > self.max_bytes:
            return
        with self._lock:
            old = self._tiles.pop(tile, None)
            if old is not None:
                self.bytes -= len(old) + ENTRY_OVERHEAD
            self._tiles[tile] = packed
            self.bytes += cost
            while self.bytes > self.max_bytes:
                _, evicted = self._tiles.popitem(last=False)
                self.bytes -= len(evicted) + ENTRY_OVERHEAD
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.bytes = 0
            self.clears += 1

    def stats(self) -> dict[str, int | float]:
        asked = self.hits + self.misses
        return {
            "tiles": len(self._tiles),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / asked if asked else 0.0,
            "evictions": self.evictions,
            "clears": self.clears,
        }
