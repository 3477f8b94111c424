"""Merkle trees exactly as RFC 9162 section 2.1 defines them (pure: no Django).

A tree of ``n`` leaves splits at the largest power of two smaller than ``n``; leaf hashes are
SHA-256(0x00 || data) and interior nodes SHA-256(0x01 || left || right).

Besides the in-memory functions named in DESIGN.md, this module speaks in *stored subtrees*:
``(level, index)`` names the complete subtree of ``2**level`` leaves that starts at leaf
``index << level``. Any range a proof needs is a right fold of at most ``log2 n`` such subtrees,
so a store that keeps every complete subtree hash serves any proof in O(log n) reads
(see docs/ledger.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
MAX_SIZE = 2**63 - 1  # RFC 9162 sizes are uint64; 2**63 keeps every index a signed 64-bit int
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256

Subtree = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [lo, hi)


class ProofError(ValueError):
    """A proof, or the arguments given to verify it, does not hold."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def fold(hashes: Sequence[bytes]) -> bytes:
    """Root of the subtrees ``hashes`` (decreasing sizes, left to right): a right fold."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes."""
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        # Pairing level by level and carrying an odd last node up gives RFC 9162's shape.
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --- which ranges a proof is made of ------------------------------------------------------


def range_subtrees(lo: int, hi: int) -> list[Subtree]:
    """The complete subtrees, largest first, whose right fold is the hash of leaves [lo, hi)."""
    out = []
    while lo < hi:
        level = (lo & -lo).bit_length() - 1 if lo else (hi - lo).bit_length() - 1
        while (1 << level) > hi - lo:
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def inclusion_proof_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose hashes form PATH(index, D[size]), leaf side first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_proof_ranges(old_size: int, new_size: int) -> list[Range]:
    """The leaf ranges whose hashes form PROOF(old_size, D[new_size]), deepest first."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    out: list[Range] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:
        if m == hi - lo:
            if not complete:
                out.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    out.reverse()
    return out


def _range_hash(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    return fold([subtree_hash(leaf_hashes, s) for s in range_subtrees(lo, hi)])


def subtree_hash(leaf_hashes: Sequence[bytes], subtree: Subtree) -> bytes:
    level, index = subtree
    start = index << level
    return root_hash(leaf_hashes[start : start + (1 << level)])


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) for the tree made of ``leaf_hashes``."""
    ranges = inclusion_proof_ranges(index, len(leaf_hashes))
    return [_range_hash(leaf_hashes, lo, hi) for lo, hi in ranges]


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(old_size, D[n]) for the tree made of ``leaf_hashes``."""
    ranges = consistency_proof_ranges(old_size, len(leaf_hashes))
    return [_range_hash(leaf_hashes, lo, hi) for lo, hi in ranges]


# --- appending -----------------------------------------------------------------------------


def frontier(size: int) -> list[Subtree]:
    """The complete subtrees a tree of ``size`` leaves is made of, largest first."""
    return range_subtrees(0, size)


def append_leaves(
    size: int, frontier_hashes: Sequence[bytes], leaf_hashes: Iterable[bytes]
) -> tuple[list[tuple[int, int, bytes]], list[bytes]]:
    """Extend a tree of ``size`` leaves by ``leaf_hashes``.

    ``frontier_hashes`` are the hashes of ``frontier(size)``. Returns every complete subtree
    that the new leaves create, as ``(level, index, hash)`` (leaves included, level 0), and the
    new frontier hashes. Each new node is hashed exactly once.
    """
    subtrees = frontier(size)
    if len(subtrees) != len(frontier_hashes):
        raise ValueError(f"a tree of size {size} has {len(subtrees)} frontier hashes")
    stack = [(lv, i, h) for (lv, i), h in zip(subtrees, frontier_hashes, strict=True)]
    created: list[tuple[int, int, bytes]] = []
    add, pop = created.append, stack.pop
    i = size
    for h in leaf_hashes:
        node = (0, i, h)
        add(node)
        i += 1
        while stack and stack[-1][0] == node[0]:
            left = pop()
            node = (node[0] + 1, left[1] >> 1, _sha256(b"\x01" + left[2] + node[2]).digest())
            add(node)
        stack.append(node)
    return created, [h for _, _, h in stack]


# --- verification ----------------------------------------------------------------------------


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes")
    return bytes(value)


def _check_size(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise ProofError(f"{what} must be an integer from 0 to {MAX_SIZE}")
    return value


def _check_proof(proof: object) -> list[bytes]:
    if not isinstance(proof, list | tuple):
        raise ProofError("a proof is a list of hashes")
    if len(proof) > 2 * 64:
        raise ProofError("a proof has at most 128 hashes")
    return [_check_hash(p, "every proof hash") for p in proof]


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``."""
    fn = _check_size(index, "leaf index")
    sn = _check_size(size, "tree size") - 1
    r = _check_hash(leaf_hash, "leaf hash")
    root = _check_hash(root, "root hash")
    path = _check_proof(proof)
    if fn > sn:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    first = _check_size(old_size, "old size")
    second = _check_size(new_size, "new size")
    old_root = _check_hash(old_root, "old root hash")
    new_root = _check_hash(new_root, "new root hash")
    path = _check_proof(proof)
    if first > second:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if first == second or first == 0:
        if path:
            raise ProofError("no proof hashes are expected between these sizes")
        if first == second and old_root != new_root:
            raise ProofError("same size, different root hashes")
        if first == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root hash of an empty tree is SHA-256 of nothing")
        return
    if not path:
        raise ProofError("consistency proof is empty")
    if first & (first - 1) == 0:  # a power of two: the old root is a node of the new tree
        path = [old_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root hash")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root hash")
