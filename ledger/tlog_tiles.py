"""C2SP tlog-tiles paths, widths and entry bundles (pure: no Django).

A tile at level ``L``, index ``N`` holds the Merkle tree hashes of level ``8·L`` (Merkle levels,
each the hash of ``256**L`` leaves), indexes ``[256·N, 256·N + W)``; ``W`` is 256 for a full tile.
Paths (https://c2sp.org/tlog-tiles)::

    tile/<L>/<N>[.p/<W>]        hash tiles, L from 0 to 63
    tile/entries/<N>[.p/<W>]    entry bundles: big-endian uint16 length-prefixed entries

``<N>`` is written in zero-padded groups of three digits, all but the last prefixed with ``x``
(1234067 → ``x001/x234/067``).
"""

from __future__ import annotations

import re

HEIGHT = 8
WIDTH = 1 << HEIGHT  # 256 hashes in a full tile
HASH_SIZE = 32
MAX_LEVEL = 63
MAX_ENTRY = 0xFFFF

_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


class TilePathError(ValueError):
    """Not a canonical tlog-tiles path."""


def encode_index(index: int) -> str:
    """``N`` as tlog-tiles writes it: ``x001/x234/067``."""
    if index < 0:
        raise TilePathError(f"negative tile index {index}")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, index: int, width: int = WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``; ``level`` is a number or ``"entries"``."""
    if level != "entries" and not (isinstance(level, int) and 0 <= level <= MAX_LEVEL):
        raise TilePathError(f"bad tile level {level!r}")
    if not 1 <= width <= WIDTH:
        raise TilePathError(f"bad tile width {width}")
    path = f"tile/{level}/{encode_index(index)}"
    return path if width == WIDTH else f"{path}.p/{width}"


def parse_tile_path(path: str) -> tuple[int | str, int, int]:
    """``(level or "entries", index, width)`` of a canonical tile path (no leading slash)."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise TilePathError(f"not a tile path: {path[:80]!r}")
    level: int | str = match["level"]
    if level != "entries":
        level = int(level)
        if level > MAX_LEVEL:
            raise TilePathError(f"tile level {level} is above {MAX_LEVEL}")
    index = int(match["index"].replace("x", "").replace("/", ""))
    width = int(match["width"]) if match["width"] else WIDTH
    if match["width"] and width >= WIDTH:
        raise TilePathError("a partial tile is 1 to 255 hashes wide")
    if tile_path(level, index, width) != path:
        raise TilePathError(f"not the canonical path of tile {index}: {path[:80]!r}")
    return level, index, width


def hashes_at(level: int, size: int) -> int:
    """How many complete hashes a tree of ``size`` leaves has at tile level ``level``."""
    return size >> (HEIGHT * level)


def tile_width(level: int, index: int, size: int) -> int:
    """The width of tile ``(level, index)`` in a tree of ``size`` leaves (0: no such tile)."""
    return max(0, min(WIDTH, hashes_at(level, size) - WIDTH * index))


def encode_bundle(entries: list[bytes]) -> bytes:
    """An entry bundle: each entry prefixed with its length as a big-endian uint16."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    entries, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("an entry bundle ends inside a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise ValueError("an entry bundle ends inside an entry")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return entries


def split_hashes(data: bytes) -> list[bytes]:
    if len(data) % HASH_SIZE:
        raise ValueError(f"a tile of {len(data)} bytes is not whole hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
