"""C2SP tlog-tiles read endpoints: ``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]`` and
``/tile/entries/<N>[.p/<W>]``, static and cacheable (docs/consortium.md)."""

from __future__ import annotations

import gzip

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from ledger import services, tile_reads, tlog_tiles

FULL_CACHE = "public, max-age=31536000, immutable"
PARTIAL_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "public, max-age=2"
OCTETS = "application/octet-stream"


def _not_found(detail: str) -> HttpResponse:
    response = HttpResponse(detail + "\n", status=404, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def checkpoint(request: HttpRequest) -> HttpResponse:
    """The latest checkpoint, with every cosignature it has gathered."""
    latest = services.checkpoint_latest()
    if latest is None:
        return _not_found("the log has no checkpoint yet")
    response = HttpResponse(
        services.checkpoint_text(latest), content_type="text/plain; charset=utf-8"
    )
    response["Cache-Control"] = CHECKPOINT_CACHE
    return response


def _gzip_accepted(request: HttpRequest) -> bool:
    accepted = request.META.get("HTTP_ACCEPT_ENCODING", "")
    return any(part.split(";")[0].strip() == "gzip" for part in accepted.split(","))


@require_safe
def tile(request: HttpRequest, path: str) -> HttpResponse:
    try:
        level, index, width = tlog_tiles.parse_tile_path("tile/" + path)
    except tlog_tiles.TilePathError as exc:
        return _not_found(str(exc))
    try:
        if level == "entries":
            found = tile_reads.read_entries(index, width)
        else:
            found = tile_reads.read_tile(int(level), index, width)
    except tile_reads.NoSuchTile as exc:
        return _not_found(str(exc))
    data = found.data
    response = HttpResponse(content_type=OCTETS)
    if level == "entries":
        response["Vary"] = "Accept-Encoding"
        if _gzip_accepted(request):
            data = gzip.compress(data, compresslevel=6, mtime=0)
            response["Content-Encoding"] = "gzip"
    response.content = data
    response["Cache-Control"] = FULL_CACHE if found.full else PARTIAL_CACHE
    return response
