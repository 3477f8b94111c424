"""Proofs served from the stored subtree hashes: O(log n) rows per proof, never a scan of leaves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q

from ledger import merkle
from ledger.models import Leaf, TreeNode


class SizeError(ValueError):
    """A tree size or index the sealed log cannot answer for."""


@dataclass
class HashReader:
    """Reads subtree hashes in one round trip per table and counts the rows it read."""

    rows_read: int = 0
    _cache: dict[merkle.Subtree, bytes] = field(default_factory=dict)

    def read(self, subtrees: Iterable[merkle.Subtree]) -> dict[merkle.Subtree, bytes]:
        wanted = set(subtrees) - self._cache.keys()
        leaves = [index for level, index in wanted if level == 0]
        nodes = [(level, index) for level, index in wanted if level > 0]
        if leaves:
            for index, h in Leaf.objects.filter(index__in=leaves).values_list("index", "leaf_hash"):
                self._cache[(0, index)] = bytes(h)
                self.rows_read += 1
        if nodes:
            q = Q()
            for level, index in nodes:
                q |= Q(level=level, index=index)
            for level, index, h in TreeNode.objects.filter(q).values_list("level", "index", "hash"):
                self._cache[(level, index)] = bytes(h)
                self.rows_read += 1
        missing = wanted - self._cache.keys()
        if missing:
            raise SizeError(f"the log has no stored hash for subtrees {sorted(missing)[:3]}")
        return self._cache

    def range_hashes(self, ranges: list[merkle.Range]) -> list[bytes]:
        """Hash of each leaf range, every subtree of every range fetched in one go."""
        plan = [merkle.range_subtrees(lo, hi) for lo, hi in ranges]
        got = self.read(s for subtrees in plan for s in subtrees)
        return [merkle.fold([got[s] for s in subtrees]) for subtrees in plan]


def _check_size(size: int, sealed_size: int, what: str = "tree size") -> None:
    if not 0 <= size <= sealed_size:
        raise SizeError(f"{what} {size} is outside the sealed log (0 to {sealed_size})")


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


def consistency(
    old_size: int, new_size: int, *, sealed_size: int, reader: HashReader | None = None
) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from stored hashes."""
    _check_size(new_size, sealed_size, "new size")
    if not 0 <= old_size <= new_size:
        raise SizeError(f"old size {old_size} must be from 0 to the new size {new_size}")
    reader = reader or HashReader()
    return reader.range_hashes(merkle.consistency_proof_ranges(old_size, new_size))
