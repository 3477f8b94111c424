"""A mirror / verifier of a log over C2SP tlog-tiles (stdlib and the pure ledger modules only).

Trust nothing the log serves until it is checked: the checkpoint must carry the log's signature
and at least ``quorum`` cosignatures from the given witness keys; every tile fetched is then
checked against that checkpoint, as Go's ``golang.org/x/mod/sumdb/tlog`` does:

* the rightmost (partial) tile of each level holds the hashes the tree's root is folded from
  (``merkle.frontier``), so recomputing the root from them checks every one of their hashes;
* a full tile's own Merkle tree hash is one hash of the tile above (level ``L + 1``, index
  ``N // 256``, position ``N % 256``), checked the same way, up to a rightmost tile.

Hashes between tile levels are computed inside the tile: the subtree ``(8·L + r, i)`` is the
Merkle tree hash of the ``2**r`` tile hashes ``[i·2**r, (i + 1)·2**r)`` of tile level ``L``.
An inclusion proof of leaf ``i`` is then made from checked hashes, verified against the root, and
the entry bundle's statement must hash to the leaf.
"""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ledger import merkle, mirror_http, note, tlog_tiles
from ledger.checkpoint import Checkpoint

Fetch = Callable[[str], bytes]  # a path under the log's prefix ("checkpoint", "tile/0/000") → body
Tile = tuple[int, int, int]  # (tile level, index, width)
USER_AGENT = "ClaimProof-mirror/1 (C2SP tlog-tiles client)"


class MirrorError(Exception):
    """What the log served cannot be fetched or does not check out."""


class NotFinal(MirrorError):
    """The checkpoint lacks the quorum of cosignatures, or does not cover the leaf yet."""


class MirrorFork(MirrorError):
    """The log signed two histories: checkpoints that no consistency proof joins."""


class LeafMismatch(MirrorError):
    """The log holds another leaf at that index than the one a claim discloses."""


def http_fetcher(base_url: str, timeout: float = 5.0, max_bytes: int = 1 << 20) -> Fetch:
    """GET ``<base_url>/<path>`` on pooled keep-alive connections (gzip accepted); a non-200
    answer or a fault is a MirrorError."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {base_url[:80]!r}")
    prefix = base_url.rstrip("/") + "/"

    def fetch(path: str) -> bytes:
        try:
            response = mirror_http.POOL.request(
                "GET",
                prefix + path,
                headers={"Accept-Encoding": "gzip, identity", "User-Agent": USER_AGENT},
                timeout=timeout,
                max_body=max_bytes,
            )
        except (OSError, http.client.HTTPException) as exc:
            raise MirrorError(f"{prefix}{path}: {exc}") from exc
        if response.status != 200:
            raise MirrorError(f"{prefix}{path}: HTTP {response.status}")
        body = response.body
        if response.truncated:
            raise MirrorError(f"{prefix}{path}: larger than {max_bytes} bytes")
        if response.header("Content-Encoding") == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise MirrorError(f"{prefix}{path}: bad gzip: {exc}") from exc
        if len(body) > max_bytes:
            raise MirrorError(f"{prefix}{path}: larger than {max_bytes} bytes")
        return body

    return fetch


# --- the checkpoint ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    text: str
    cosigners: dict[str, int]  # witness name → cosignature timestamp


def verify_checkpoint(
    text: str, log_vkey: str, witness_vkeys: Iterable[str], quorum: int
) -> VerifiedCheckpoint:
    """The checkpoint in ``text``, if the log signed it and ``quorum`` known witnesses did."""
    try:
        body = note.verify(text, [log_vkey]).text
        checkpoint = Checkpoint.parse(body)
        cosigners = note.verify_cosignature(text, list(witness_vkeys)) if quorum else {}
    except note.NoteError as exc:
        raise MirrorError(f"the checkpoint does not verify: {exc}") from exc
    if len(cosigners) < quorum:
        raise NotFinal(
            f"the checkpoint of size {checkpoint.size} has {len(cosigners)} valid cosignatures "
            f"({', '.join(sorted(cosigners)) or 'none'}), fewer than the quorum {quorum}"
        )
    return VerifiedCheckpoint(checkpoint, text, cosigners)


def fetch_checkpoint(
    fetch: Fetch, log_vkey: str, witness_vkeys: Iterable[str], quorum: int
) -> VerifiedCheckpoint:
    try:
        text = fetch("checkpoint").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MirrorError("the checkpoint is not UTF-8") from exc
    return verify_checkpoint(text, log_vkey, witness_vkeys, quorum)


# --- tiles -------------------------------------------------------------------------------------


def tile_of(subtree: merkle.Subtree, size: int) -> Tile:
    """The tile holding the hashes that stored subtree ``(level, index)`` is computed from."""
    level, index = subtree
    tile_level, r = divmod(level, tlog_tiles.HEIGHT)
    n = (index << r) >> tlog_tiles.HEIGHT
    return tile_level, n, tlog_tiles.tile_width(tile_level, n, size)


def rightmost_tiles(size: int) -> set[Tile]:
    """The partial tile of each level: the root of ``size`` is folded from their hashes."""
    out, level = set(), 0
    while (count := tlog_tiles.hashes_at(level, size)) > 0:
        if count % tlog_tiles.WIDTH:
            out.add((level, count // tlog_tiles.WIDTH, count % tlog_tiles.WIDTH))
        level += 1
    return out


def tiles_to_check(subtrees: Iterable[merkle.Subtree], size: int) -> set[Tile]:
    """The tiles holding ``subtrees``, the rightmost ones and every parent of a full tile."""
    todo = {tile_of(s, size) for s in subtrees} | rightmost_tiles(size)
    seen: set[Tile] = set()
    while todo:
        tile = todo.pop()
        if tile in seen:
            continue
        seen.add(tile)
        level, n, width = tile
        if width == tlog_tiles.WIDTH:
            parent = n // tlog_tiles.WIDTH
            todo.add((level + 1, parent, tlog_tiles.tile_width(level + 1, parent, size)))
    return seen


def subtree_hash(subtree: merkle.Subtree, tiles: dict[Tile, list[bytes]], size: int) -> bytes:
    """The hash of a stored subtree, computed inside its tile."""
    level, index = subtree
    tile = tile_of(subtree, size)
    r = level % tlog_tiles.HEIGHT
    lo = (index << r) - tile[1] * tlog_tiles.WIDTH
    hashes = tiles[tile][lo : lo + (1 << r)]
    if len(hashes) != 1 << r:
        raise MirrorError(f"tile {tile} does not hold subtree {subtree}")
    return merkle.root_hash(hashes)


def check_tiles(tiles: dict[Tile, list[bytes]], size: int, root: bytes) -> None:
    """Raise MirrorError unless every tile agrees with the tree of ``size`` and ``root``."""
    for (level, n, width), hashes in tiles.items():
        if len(hashes) != width:
            raise MirrorError(f"tile {level}/{n} has {len(hashes)} hashes, not {width}")
    folded = merkle.fold([subtree_hash(s, tiles, size) for s in merkle.frontier(size)])
    if folded != root:
        raise MirrorError(f"the rightmost tiles do not fold to the checkpoint's root (size {size})")
    for (level, n, width), hashes in tiles.items():
        if width != tlog_tiles.WIDTH:
            continue  # a rightmost tile: checked by the fold above
        parent_n = n // tlog_tiles.WIDTH
        parent = (level + 1, parent_n, tlog_tiles.tile_width(level + 1, parent_n, size))
        if parent not in tiles:
            raise MirrorError(f"tile {level}/{n} cannot be checked without tile {parent[:2]}")
        if merkle.root_hash(hashes) != tiles[parent][n % tlog_tiles.WIDTH]:
            raise MirrorError(f"tile {level}/{n} does not match its hash in tile {parent[:2]}")


def fetch_tiles(fetch: Fetch, wanted: Iterable[Tile], workers: int = 8) -> dict[Tile, list[bytes]]:
    """Fetch tiles in parallel, unchecked."""
    wanted = sorted(wanted)

    def one(tile: Tile) -> list[bytes]:
        level, n, width = tile
        try:
            return tlog_tiles.split_hashes(fetch(tlog_tiles.tile_path(level, n, width)))
        except ValueError as exc:
            raise MirrorError(f"tile {level}/{n}: {exc}") from exc

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(one, wanted), strict=True))


# --- inclusion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inclusion:
    """Leaf ``index`` checked against a cosigned checkpoint through the log's tiles."""

    index: int
    checkpoint: VerifiedCheckpoint
    leaf_hash: bytes
    proof: list[bytes]
    entry: bytes | None  # the statement from the entry bundle (None if not fetched)
    tiles_fetched: int


def prove_inclusion(
    fetch: Fetch,
    index: int,
    *,
    log_vkey: str,
    witness_vkeys: Iterable[str],
    quorum: int,
    with_entry: bool = True,
    checkpoint: VerifiedCheckpoint | None = None,
) -> Inclusion:
    """Fetch and check what proves leaf ``index`` in the log's cosigned checkpoint."""
    cp = checkpoint or fetch_checkpoint(fetch, log_vkey, witness_vkeys, quorum)
    size, root = cp.checkpoint.size, cp.checkpoint.root_hash
    if index < 0:
        raise MirrorError(f"no leaf {index}")
    if index >= size:
        raise NotFinal(f"leaf {index} is not in the checkpoint of size {size}")
    plan = [merkle.range_subtrees(lo, hi) for lo, hi in merkle.inclusion_proof_ranges(index, size)]
    wanted = [(0, index), *(s for subtrees in plan for s in subtrees)]
    tiles = fetch_tiles(fetch, tiles_to_check(wanted, size))
    check_tiles(tiles, size, root)
    leaf_hash = subtree_hash((0, index), tiles, size)
    proof = [merkle.fold([subtree_hash(s, tiles, size) for s in subtrees]) for subtrees in plan]
    try:
        merkle.verify_inclusion(index, size, leaf_hash, proof, root)
    except merkle.ProofError as exc:
        raise MirrorError(f"the inclusion proof of leaf {index} fails: {exc}") from exc
    entry = _entry(fetch, index, size, leaf_hash) if with_entry else None
    return Inclusion(index, cp, leaf_hash, proof, entry, len(tiles))


def _entry(fetch: Fetch, index: int, size: int, leaf_hash: bytes) -> bytes:
    n = index // tlog_tiles.WIDTH
    width = tlog_tiles.tile_width(0, n, size)
    try:
        entries = tlog_tiles.decode_bundle(fetch(tlog_tiles.tile_path("entries", n, width)))
    except ValueError as exc:
        raise MirrorError(f"entry bundle {n}: {exc}") from exc
    if len(entries) != width:
        raise MirrorError(f"entry bundle {n} has {len(entries)} entries, not {width}")
    entry = entries[index % tlog_tiles.WIDTH]
    if merkle.leaf_hash(entry) != leaf_hash:
        raise MirrorError(f"entry {index} does not hash to its leaf in the checked tiles")
    return entry


# --- consistency -------------------------------------------------------------------------------


def prove_consistency(
    fetch: Fetch, old: VerifiedCheckpoint, new: VerifiedCheckpoint
) -> list[bytes]:
    """Check through the log's tiles that ``new`` extends ``old`` (both already verified); the
    consistency proof. :class:`MirrorFork` when the log signed two histories."""
    m, n = old.checkpoint.size, new.checkpoint.size
    old_root, new_root = old.checkpoint.root_hash, new.checkpoint.root_hash
    if old.checkpoint.origin != new.checkpoint.origin:
        raise MirrorError(f"not one log: {old.checkpoint.origin!r}, {new.checkpoint.origin!r}")
    if n < m:
        raise MirrorFork(f"the log went back from size {m} to size {n}")
    if m == n or m == 0:
        if m == n and old_root != new_root:
            raise MirrorFork(f"two trees of size {n} signed by the log")
        return []
    plan = [merkle.range_subtrees(lo, hi) for lo, hi in merkle.consistency_proof_ranges(m, n)]
    tiles = fetch_tiles(fetch, tiles_to_check([s for subtrees in plan for s in subtrees], n))
    check_tiles(tiles, n, new_root)
    proof = [merkle.fold([subtree_hash(s, tiles, n) for s in subtrees]) for subtrees in plan]
    try:
        merkle.verify_consistency(m, n, old_root, new_root, proof)
    except merkle.ProofError as exc:
        raise MirrorFork(
            f"the checkpoint of size {n} does not extend the one of size {m} ({exc})"
        ) from exc
    return proof
