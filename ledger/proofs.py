"""Proofs served from the stored subtree hashes: O(log n) rows per proof, never a scan of leaves.

Two readers. :class:`HashReader` reads exactly the stored hashes asked for, in one round trip; it
is what sealing and the audit use (they read inside transactions that may roll back, so nothing
they read may outlive them). :class:`TileReader` serves them from the process-wide tile cache
(``ledger/tiles.py``) and reads the missing tiles whole, in one round trip. The API serves proofs
through :func:`served_inclusion` and :func:`served_consistency`, which check every proof built
from the cache against the signed checkpoint of its size before it leaves (docs/ledger.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Q

from ledger import merkle
from ledger.models import Checkpoint, Leaf, TreeNode
from ledger.tiles import TileCache

log = logging.getLogger(__name__)


class SizeError(ValueError):
    """A tree size or index the sealed log cannot answer for."""


# One round trip for any set of subtrees: leaves by primary key, nodes by a join of the wanted
# (level, index) pairs on the (level, index) primary key (nested loop of index scans).
_EXACT_SQL = (
    'SELECT 0, "index", leaf_hash FROM ledger_leaf WHERE "index" = ANY(%s::bigint[]) '
    'UNION ALL SELECT n.level, n."index", n.hash '
    'FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, "index") '
    'JOIN ledger_treenode n ON n.level = w.level AND n."index" = w."index"'
)
# One range scan of a primary key per tile (portable SQL: PostgreSQL and SQLite).
_LEAF_TILE = 'SELECT 0, "index", leaf_hash FROM ledger_leaf WHERE "index" >= %s AND "index" < %s'
_NODE_TILE = (
    'SELECT level, "index", hash FROM ledger_treenode '
    'WHERE level = %s AND "index" >= %s AND "index" < %s'
)


def _read_exact(wanted: Iterable[merkle.Subtree]) -> list[tuple[int, int, bytes]]:
    leaves = [index for level, index in wanted if level == 0]
    nodes = [(level, index) for level, index in wanted if level > 0]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_EXACT_SQL, [leaves, [lv for lv, _ in nodes], [i for _, i in nodes]])
            return cursor.fetchall()
    # Portable ORM path (SQLite): one query per table.
    rows: list[tuple[int, int, bytes]] = []
    if leaves:
        rows += [
            (0, index, h)
            for index, h in Leaf.objects.filter(index__in=leaves).values_list("index", "leaf_hash")
        ]
    if nodes:
        q = Q()
        for level, index in nodes:
            q |= Q(level=level, index=index)
        rows += list(TreeNode.objects.filter(q).values_list("level", "index", "hash"))
    return rows


def _read_tiles(ranges: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, bytes]]:
    """Every stored hash of each ``(level, lo, hi)`` range: all ranges in one UNION ALL query."""
    parts, params = [], []
    for level, lo, hi in ranges:
        if level == 0:
            parts.append(_LEAF_TILE)
            params += [lo, hi]
        else:
            parts.append(_NODE_TILE)
            params += [level, lo, hi]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        return cursor.fetchall()


@dataclass
class HashReader:
    """Reads stored subtree hashes, one round trip per :meth:`read`, and counts the rows read.

    It remembers what it read, so proofs computed through one reader share reads; plan them
    together (:func:`inclusion_with_root`) to make them one round trip.
    """

    rows_read: int = 0
    _cache: dict[merkle.Subtree, bytes] = field(default_factory=dict)

    def read(self, subtrees: Iterable[merkle.Subtree]) -> dict[merkle.Subtree, bytes]:
        wanted = set(subtrees) - self._cache.keys()
        if wanted:
            self._fetch(wanted)
            missing = wanted - self._cache.keys()
            if missing:
                raise SizeError(f"the log has no stored hash for subtrees {sorted(missing)[:3]}")
        return self._cache

    def _fetch(self, wanted: set[merkle.Subtree]) -> None:
        rows = _read_exact(wanted)
        self.rows_read += len(rows)
        for level, index, h in rows:
            self._cache[(level, index)] = bytes(h)

    def range_hashes(self, ranges: list[merkle.Range]) -> list[bytes]:
        """Hash of each leaf range, every subtree of every range fetched in one go."""
        plan = [merkle.range_subtrees(lo, hi) for lo, hi in ranges]
        got = self.read(s for subtrees in plan for s in subtrees)
        return [merkle.fold([got[s] for s in subtrees]) for subtrees in plan]


@dataclass
class TileReader(HashReader):
    """A :class:`HashReader` that answers from a :class:`TileCache` and reads missing tiles
    whole. Only for proofs that are checked against a signed checkpoint before use."""

    tiles: TileCache | None = None

    def _fetch(self, wanted: set[merkle.Subtree]) -> None:
        tiles = self.tiles
        assert tiles is not None
        found, missing = tiles.lookup(wanted)
        self._cache.update(found)
        if not missing:
            return
        rows = _read_tiles([tiles.tile_range(t) for t in sorted(missing)])
        self.rows_read += len(rows)
        by_tile: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        bits = tiles.tile_bits
        for level, index, h in rows:
            h = bytes(h)
            by_tile.setdefault((level, index >> bits), []).append((index, h))
            if (level, index) in wanted:
                self._cache[(level, index)] = h
        for tile, items in by_tile.items():
            items.sort()
            lo = tile[1] << bits
            width = 0  # keep the gap-free prefix only: a lookup beyond it must miss
            while width < len(items) and items[width][0] == lo + width:
                width += 1
            tiles.put(tile, b"".join(h for _, h in items[:width]))


_shared: TileCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> TileCache | None:
    """The process's tile cache, ``LEDGER_TILE_CACHE_MB`` megabytes (0 disables it)."""
    global _shared
    max_bytes = int(getattr(settings, "LEDGER_TILE_CACHE_MB", 64) * 2**20)
    if max_bytes <= 0:
        return None
    cache = _shared
    if cache is None or cache.max_bytes != max_bytes:
        with _shared_lock:
            if _shared is None or _shared.max_bytes != max_bytes:
                _shared = TileCache(max_bytes)
            cache = _shared
    return cache


# --- proofs --------------------------------------------------------------------------------------


def _check_size(size: int, sealed_size: int, what: str = "tree size") -> None:
    if not 0 <= size <= sealed_size:
        raise SizeError(f"{what} {size} is outside the sealed log (0 to {sealed_size})")


def _check_consistency(old_size: int, new_size: int, sealed_size: int) -> None:
    _check_size(new_size, sealed_size, "new size")
    if not 0 <= old_size <= new_size:
        raise SizeError(f"old size {old_size} must be from 0 to the new size {new_size}")


def root_at(size: int, *, sealed_size: int, reader: HashReader | None = None) -> bytes:
    _check_size(size, sealed_size)
    reader = reader or HashReader()
    return reader.range_hashes([(0, size)])[0] if size else merkle.EMPTY_ROOT


def inclusion(
    index: int, size: int, *, sealed_size: int, reader: HashReader | None = None
) -> list[bytes]:
    """PATH(index, D[size]) from stored hashes."""
    _check_size(size, sealed_size)
    if not 0 <= index < size:
        raise SizeError(f"leaf index {index} is outside a tree of size {size}")
    reader = reader or HashReader()
    return reader.range_hashes(merkle.inclusion_proof_ranges(index, size))


def inclusion_with_root(
    index: int, size: int, *, sealed_size: int, reader: HashReader | None = None
) -> tuple[list[bytes], bytes]:
    """PATH(index, D[size]) and MTH(D[size]), planned together: one read, one round trip."""
    _check_size(size, sealed_size)
    if not 0 <= index < size:
        raise SizeError(f"leaf index {index} is outside a tree of size {size}")
    reader = reader or HashReader()
    *path, root = reader.range_hashes([*merkle.inclusion_proof_ranges(index, size), (0, size)])
    return path, root


def consistency(
    old_size: int, new_size: int, *, sealed_size: int, reader: HashReader | None = None
) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from stored hashes."""
    _check_consistency(old_size, new_size, sealed_size)
    reader = reader or HashReader()
    return reader.range_hashes(merkle.consistency_proof_ranges(old_size, new_size))


def consistency_with_roots(
    old_size: int, new_size: int, *, sealed_size: int, reader: HashReader | None = None
) -> tuple[list[bytes], bytes, bytes]:
    """PROOF(old_size, D[new_size]) and both roots, planned together: one read."""
    _check_consistency(old_size, new_size, sealed_size)
    reader = reader or HashReader()
    ranges = merkle.consistency_proof_ranges(old_size, new_size)
    *path, old_root, new_root = reader.range_hashes([*ranges, (0, old_size), (0, new_size)])
    return path, old_root, new_root


# --- what the API serves: through the cache, checked against signed checkpoints -----------------


@dataclass(frozen=True)
class Signed:
    """What served proofs are checked against, read from the database, never from the cache."""

    sealed_size: int  # the latest checkpoint's size (0 without one)
    roots: dict[int, bytes]  # root hash of the checkpoint of each size asked (and of the latest)
    leaf_hash: bytes | None = None  # from the Leaf row asked for; None when there is none


_SIGNED_SQL = (
    "(SELECT size, root_hash FROM ledger_checkpoint ORDER BY size DESC LIMIT 1) "
    "UNION ALL SELECT size, root_hash FROM ledger_checkpoint WHERE size = ANY(%s::bigint[]) "
    'UNION ALL SELECT -1, leaf_hash FROM ledger_leaf WHERE "index" = %s'
)


def signed_roots(sizes: Iterable[int], leaf_index: int | None = None) -> Signed:
    """The latest checkpoint, the checkpoints of ``sizes`` and leaf ``leaf_index``'s hash: one
    round trip on PostgreSQL."""
    sizes = list(sizes)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_SIGNED_SQL, [sizes, leaf_index])
            rows = cursor.fetchall()
    else:
        latest = Checkpoint.objects.order_by("-size").values_list("size", "root_hash")[:1]
        rows = [
            *latest,
            *Checkpoint.objects.filter(size__in=sizes).values_list("size", "root_hash"),
        ]
        if leaf_index is not None:
            rows += [
                (-1, h)
                for h in Leaf.objects.filter(index=leaf_index).values_list("leaf_hash", flat=True)
            ]
    roots = {size: bytes(h) for size, h in rows if size >= 0}
    leaf = next((bytes(h) for size, h in rows if size < 0), None)
    return Signed(sealed_size=max(roots, default=0), roots=roots, leaf_hash=leaf)


@dataclass
class _LatestCheckpoint:
    size: int
    root: bytes
    read_at: float


_latest_lock = threading.Lock()
_latest: _LatestCheckpoint | None = None


def latest_signed(ttl_s: float) -> tuple[int, bytes] | None:
    """(size, root) of the latest checkpoint, re-read from the database at most every ``ttl_s``.

    Checkpoint rows are append-only, so the only way this goes stale is a newer checkpoint (a
    proof against the older one is still a true, signed proof) or the database being replaced
    under the running process (a restore): then the next read, at most ``ttl_s`` later, no longer
    matches the cached tiles, the served proof fails its check and the cache is cleared.
    """
    global _latest
    now = time.monotonic()
    with _latest_lock:
        if _latest is not None and now - _latest.read_at < ttl_s:
            return _latest.size, _latest.root
    row = Checkpoint.objects.order_by("-size").values_list("size", "root_hash").first()
    if row is None:
        return None
    with _latest_lock:
        _latest = _LatestCheckpoint(row[0], bytes(row[1]), now)
    return row[0], bytes(row[1])


def served_latest_inclusion(index: int) -> tuple[int, bytes, list[bytes], bytes] | None:
    """(tree size, leaf hash, path, root) for leaf ``index`` in the latest checkpoint, from the
    tile cache with no database read while the checkpoint is fresh (LEDGER_CHECKPOINT_TTL_S).

    The path and the leaf hash come from cached tiles and must verify against the checkpoint's
    signed root; if they do not, the cache is cleared. None means "answer the slow way" (no
    cache, no checkpoint, a leaf outside the latest tree, or a failed check).
    """
    cache = shared_cache()
    ttl_s = getattr(settings, "LEDGER_CHECKPOINT_TTL_S", 1.0)
    if cache is None or ttl_s <= 0:
        return None
    latest = latest_signed(ttl_s)
    if latest is None or not 0 <= index < latest[0]:
        return None
    size, root = latest
    reader = TileReader(tiles=cache)
    path = inclusion(index, size, sealed_size=size, reader=reader)
    leaf_hash = reader.read([(0, index)])[(0, index)]
    try:
        merkle.verify_inclusion(index, size, leaf_hash, path, root)
    except merkle.ProofError as exc:
        _cache_failed(cache, f"inclusion proof of leaf {index} in size {size}", exc)
        return None
    return size, leaf_hash, path, root


def _cache_failed(cache: TileCache, what: str, exc: Exception) -> None:
    cache.clear()
    log.warning(
        "tile cache: the %s built from cached tiles fails against its signed checkpoint (%s); "
        "cache cleared, answering from the database",
        what,
        exc,
    )


def served_inclusion(index: int, size: int, signed: Signed) -> tuple[list[bytes], bytes]:
    """PATH(index, D[size]) and its root, as the API serves them.

    When ``size`` has a checkpoint the path comes from the tile cache and must verify from the
    Leaf row's hash to the checkpoint's root (which is what is returned as the root); if it does
    not, the cache is cleared and the proof read uncached. Other sizes are read uncached.
    """
    cache, root = shared_cache(), signed.roots.get(size)
    if cache is not None and root is not None and signed.leaf_hash is not None:
        path = inclusion(
            index, size, sealed_size=signed.sealed_size, reader=TileReader(tiles=cache)
        )
        try:
            merkle.verify_inclusion(index, size, signed.leaf_hash, path, root)
        except merkle.ProofError as exc:
            _cache_failed(cache, f"inclusion proof of leaf {index} in size {size}", exc)
        else:
            return path, root
    return inclusion_with_root(index, size, sealed_size=signed.sealed_size)


def served_consistency(
    old_size: int, new_size: int, signed: Signed
) -> tuple[list[bytes], bytes, bytes]:
    """PROOF(old_size, D[new_size]) and both roots, as the API serves them: from the tile cache
    when both sizes have a checkpoint and the proof verifies between their roots, else uncached."""
    cache = shared_cache()
    old_root, new_root = signed.roots.get(old_size), signed.roots.get(new_size)
    if cache is not None and old_root is not None and new_root is not None:
        reader = TileReader(tiles=cache)
        path = consistency(old_size, new_size, sealed_size=signed.sealed_size, reader=reader)
        try:
            merkle.verify_consistency(old_size, new_size, old_root, new_root, path)
        except merkle.ProofError as exc:
            _cache_failed(cache, f"consistency proof {old_size} → {new_size}", exc)
        else:
            return path, old_root, new_root
    return consistency_with_roots(old_size, new_size, sealed_size=signed.sealed_size)
