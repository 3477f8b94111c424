"""Server-rendered SVG for the ledger page (pure: the standard library and ledger.merkle only).

Two drawings: the tree size over time (a step chart) and an inclusion proof as the path from a
leaf up to the root. Every value that reaches the markup is escaped; callers may insert the
returned string as-is.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from ledger import merkle

# --- tree size over time -----------------------------------------------------------------------

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 16, 48


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _fmt_tick(t: datetime, span_s: float) -> str:
    """As much of the time as tells the ticks apart."""
    if span_s < 3 * 3600:
        return t.strftime("%H:%M:%S")
    if span_s < 3 * 86400:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%Y-%m-%d")


def nice_ceiling(n: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``n`` (n >= 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= n:
                return m * step
        step *= 10


def size_chart_svg(points: Sequence[tuple[datetime, int]], *, title: str = "Tree size") -> str:
    """A step chart of tree size against time, oldest point first, with labelled axes.

    Each checkpoint is a ``<circle class="point">`` whose ``<title>`` gives its size and time.
    """
    label = escape(title)
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="size-chart-title" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="size-chart-title">{label}</title>'
    )
    if not points:
        return (
            f'{head}<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="muted">'
            "No checkpoints yet</text></svg>"
        )
    points = [(t.astimezone(UTC) if t.tzinfo else t, size) for t, size in points]
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP  # y grows downwards: size 0 sits on the x axis
    t_first, t_last = points[0][0], points[-1][0]
    span_s = (t_last - t_first).total_seconds()
    y_max = nice_ceiling(max(1, max(size for _, size in points)))

    def x(t: datetime) -> float:
        if span_s <= 0:
            return (x0 + x1) / 2
        return x0 + (t - t_first).total_seconds() / span_s * (x1 - x0)

    def y(size: int) -> float:
        return y0 - size / y_max * (y0 - y1)

    parts = [head]
    # Axes, gridlines and labels.
    for frac in (0, 0.5, 1):
        value = round(y_max * frac)
        yy = y(value)
        parts.append(f'<line class="grid" x1="{x0}" y1="{yy:.1f}" x2="{x1}" y2="{yy:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{x0 - 8}" y="{yy + 4:.1f}" text-anchor="end">{value:,}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>')
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>')
    ticks = [t_first] if span_s <= 0 else [t_first, t_first + (t_last - t_first) / 2, t_last]
    anchors = ["middle"] if span_s <= 0 else ["start", "middle", "end"]
    for t, anchor in zip(ticks, anchors, strict=True):
        parts.append(
            f'<text class="tick" x="{x(t):.1f}" y="{y0 + 18}" text-anchor="{anchor}">'
            f"{escape(_fmt_tick(t, span_s))}</text>"
        )
    day = t_first.strftime("%Y-%m-%d")
    when = f"time (UTC) on {day}" if day == t_last.strftime("%Y-%m-%d") else "time (UTC)"
    parts.append(
        f'<text class="axis-label" x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(when)}</text>"
    )
    parts.append(
        f'<text class="axis-label" x="14" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(y0 + y1) / 2})">tree size (leaves)</text>'
    )
    # The step line: the size holds until the next checkpoint raises it.
    coords: list[str] = []
    prev_y: float | None = None
    for t, size in points:
        xx, yy = x(t), y(size)
        if prev_y is not None:
            coords.append(f"{xx:.1f},{prev_y:.1f}")
        coords.append(f"{xx:.1f},{yy:.1f}")
        prev_y = yy
    parts.append(f'<polyline class="line" fill="none" points="{" ".join(coords)}"/>')
    for t, size in points:
        parts.append(
            f'<circle class="point" cx="{x(t):.1f}" cy="{y(size):.1f}" r="3.5">'
            f"<title>size {size:,} at {escape(_fmt_time(t))} UTC</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --- an inclusion proof, drawn -----------------------------------------------------------------


@dataclass(frozen=True)
class PathStep:
    """One level of an inclusion path: ``node`` (covering ``node_range``) meets ``sibling``."""

    node: bytes
    node_range: merkle.Range
    sibling: bytes
    sibling_range: merkle.Range
    sibling_side: str  # "left" or "right" of the path node
    parent: bytes


def inclusion_path(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> list[PathStep]:
    """The levels of PATH(index, D[size]) from the leaf up, hashing as RFC 9162 2.1.3.2 does.

    The last step's ``parent`` is the root the proof leads to (``leaf_hash`` itself when the
    proof is empty). Raises :class:`merkle.ProofError` when the proof has the wrong length for
    ``index`` and ``size``; whether it reaches a given root is for ``merkle.verify_inclusion``.
    """
    ranges = merkle.inclusion_proof_ranges(index, size)
    if len(ranges) != len(proof):
        raise merkle.ProofError(
            f"a proof for leaf {index} of {size} has {len(ranges)} hashes, not {len(proof)}"
        )
    fn, sn = index, size - 1
    node, lo, hi = leaf_hash, index, index + 1
    steps = []
    for p, (s_lo, s_hi) in zip(proof, ranges, strict=True):
        if fn & 1 or fn == sn:
            parent, side = merkle.node_hash(p, node), "left"
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            parent, side = merkle.node_hash(node, p), "right"
        fn >>= 1
        sn >>= 1
        steps.append(PathStep(node, (lo, hi), p, (s_lo, s_hi), side, parent))
        node, lo, hi = parent, min(lo, s_lo), max(hi, s_hi)
    return steps


def short_hash(h: bytes) -> str:
    """Abbreviated hex: the first 8 and the last 4 digits."""
    full = h.hex()
    return f"{full[:8]}…{full[-4:]}"


def _range_label(r: merkle.Range) -> str:
    lo, hi = r
    return f"leaf {lo}" if hi - lo == 1 else f"leaves {lo} to {hi - 1}"


_BOX_W, _BOX_H, _ROW_H, _PW = 210, 46, 84, 720
_COLS = {"left": 20, "path": (_PW - _BOX_W) // 2, "right": _PW - 20 - _BOX_W}


def _box(col: str, top: float, kind: str, caption: str, h: bytes) -> str:
    x = _COLS[col]
    full = f"{h.hex()}\n(base64 {base64.b64encode(h).decode('ascii')})"
    return (
        f'<g class="node {kind}"><title>{escape(caption)}: {escape(full)}</title>'
        f'<rect x="{x}" y="{top}" width="{_BOX_W}" height="{_BOX_H}" rx="6"/>'
        f'<text class="caption" x="{x + _BOX_W / 2}" y="{top + 18}" text-anchor="middle">'
        f"{escape(caption)}</text>"
        f'<text class="hash" x="{x + _BOX_W / 2}" y="{top + 36}" text-anchor="middle">'
        f"{escape(short_hash(h))}</text></g>"
    )


def inclusion_path_svg(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], *, verified: bool
) -> str:
    """The inclusion path as a drawing: the leaf at the bottom, the root at the top.

    Each level shows the sibling hash on its side and the node hash computed from the two.
    ``verified`` (the verdict of ``merkle.verify_inclusion``) labels the root.
    """
    steps = inclusion_path(index, size, leaf_hash, proof)
    rows = len(steps) + 1
    height = rows * _ROW_H - (_ROW_H - _BOX_H) + 24
    root = steps[-1].parent if steps else leaf_hash

    def top(row: int) -> float:  # row 0 is the leaf, drawn lowest
        return 12 + (rows - 1 - row) * _ROW_H

    path_x = _COLS["path"] + _BOX_W / 2
    parts = [
        f'<svg class="proof-path" viewBox="0 0 {_PW} {height}" role="img" '
        f'aria-labelledby="proof-title" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="proof-title">Inclusion path of leaf {index} in a tree of {size} leaves: '
        f"{len(steps)} levels</title>"
    ]
    for row, step in enumerate(steps):
        t, parent_bottom = top(row), top(row + 1) + _BOX_H
        side_x = _COLS[step.sibling_side] + _BOX_W / 2
        parts.append(
            f'<g class="level" data-side="{step.sibling_side}">'
            f'<line class="edge" x1="{path_x}" y1="{t}" x2="{path_x}" y2="{parent_bottom}"/>'
            f'<line class="edge" x1="{side_x}" y1="{t}" x2="{path_x}" y2="{parent_bottom}"/>'
        )
        caption = f"leaf {index}" if row == 0 else f"node: {_range_label(step.node_range)}"
        parts.append(_box("path", t, "leaf" if row == 0 else "computed", caption, step.node))
        sibling_caption = f"sibling ({step.sibling_side}): {_range_label(step.sibling_range)}"
        parts.append(_box(step.sibling_side, t, "sibling", sibling_caption, step.sibling))
        parts.append("</g>")
    leaves = "leaf" if size == 1 else "leaves"
    root_caption = f"root of {size:,} {leaves}" + (" ✓ verified" if verified else " ✗ mismatch")
    parts.append(
        _box("path", top(rows - 1), "root" if verified else "root bad", root_caption, root)
    )
    parts.append("</svg>")
    return "".join(parts)
