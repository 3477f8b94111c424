"""The read-only ledger page: the latest checkpoint, the tree's growth, and leaf lookups.

One view serves the page and, for htmx requests, just the lookup result fragment.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from config.errors import NotFound
from ledger import charts, forks, merkle, proofs, selectors, services
from ledger.models import Checkpoint, Cosignature, ForkEvidence, Leaf, Member, MemberKey

MAX_QUERY_CHARS = 100
_INDEX = re.compile(r"[+-]?\d+")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class LookupQueryError(ValueError):
    """The lookup query cannot name a leaf; the message is for people."""


def _svg(markup: str) -> SafeString:
    # charts.* escape every value they interpolate.
    return mark_safe(markup)  # noqa: S308


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def _utc(timestamp_s: int) -> datetime:
    return datetime.fromtimestamp(timestamp_s, tz=UTC)


# --- the latest checkpoint ---------------------------------------------------------------------


@dataclass(frozen=True)
class CosignerRow:
    name: str
    display_name: str
    key_id: str
    cosigned_at: datetime


@dataclass(frozen=True)
class CheckpointPanel:
    checkpoint: Checkpoint
    origin: str
    root_b64: str
    note_text: str
    final: bool
    quorum: int
    cosigners: list[CosignerRow]
    missing: list[MemberKey]
    witness_count: int

    @property
    def why_not_final(self) -> str:
        n = len(self.cosigners)
        return (
            f"{n} of {self.witness_count} witness{'es' if self.witness_count != 1 else ''} "
            f"cosigned; quorum is {self.quorum}"
        )


def checkpoint_panel(checkpoint: Checkpoint) -> CheckpointPanel:
    """Everything the page says about one checkpoint: the note, finality and who cosigned."""
    cosignatures: list[Cosignature] = list(
        checkpoint.cosignatures.select_related("member", "key").order_by("member__name")
    )
    witnesses = list(
        MemberKey.objects.select_related("member").filter(
            purpose=MemberKey.Purpose.COSIGN, revoked_at__isnull=True
        )
    )
    cosigned = {c.member_id for c in cosignatures}
    return CheckpointPanel(
        checkpoint=checkpoint,
        origin=checkpoint.note.split("\n", 1)[0],
        root_b64=_b64(bytes(checkpoint.root_hash)),
        note_text=services.checkpoint_text(checkpoint),
        final=services.checkpoint_is_final(checkpoint),
        quorum=settings.LEDGER_QUORUM,
        cosigners=[
            CosignerRow(c.member.name, str(c.member), c.key.key_id, _utc(c.timestamp))
            for c in cosignatures
        ],
        missing=[k for k in witnesses if k.member_id not in cosigned],
        witness_count=len({k.member_id for k in witnesses} | cosigned),
    )


# --- forks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForkRow:
    """One piece of fork evidence as the banner says it: the two checkpoints no proof joins."""

    evidence: ForkEvidence

    @property
    def cosigned_root_b64(self) -> str:
        root = self.evidence.cosigned_root
        return _b64(bytes(root)) if root is not None else "unknown"

    @property
    def conflicting_root_b64(self) -> str:
        return _b64(bytes(self.evidence.conflicting_root))


# --- looking up a leaf -------------------------------------------------------------------------


@dataclass
class LeafLookup:
    """The outcome of a lookup: an error, or a leaf and (once sealed) its verified proof."""

    query: str
    error: str = ""
    leaf: Leaf | None = None
    member: Member | None = None
    leaf_hash: bytes = b""
    statement: str = ""
    sealed: bool = False
    pending_reason: str = ""
    tree_size: int = 0
    root_hash: bytes = b""
    checkpoint_final: bool = False
    proof: list[bytes] = field(default_factory=list)
    verified: bool = False
    verdict: str = ""
    svg: SafeString | None = None

    @property
    def leaf_hash_b64(self) -> str:
        return _b64(self.leaf_hash)

    @property
    def root_b64(self) -> str:
        return _b64(self.root_hash)

    @property
    def proof_rows(self) -> list[tuple[int, str, str]]:
        return [(i, h.hex(), _b64(h)) for i, h in enumerate(self.proof)]


def _parse_hash(value: str) -> bytes:
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != merkle.HASH_SIZE:
        raise LookupQueryError(
            f"“{value}” is neither a leaf index nor a leaf hash. A leaf hash is 32 bytes: "
            "64 hex digits or 44 characters of base64."
        )
    return raw


def _find_leaf(query: str) -> Leaf:
    if len(query) > MAX_QUERY_CHARS:
        raise LookupQueryError(
            f"That is too long for a leaf index or hash ({len(query)} characters)."
        )
    if _INDEX.fullmatch(query) and len(query) != 64:
        index = int(query)
        if index < 0:
            raise LookupQueryError("A leaf index is a whole number from 0 up.")
        if index >= merkle.MAX_SIZE:
            raise LookupQueryError("No log has a leaf that large: indices stop below 2⁶³.")
        return selectors.leaf_get(index)
    return selectors.leaf_get(selectors.leaf_index_by_hash(_parse_hash(query)))


def leaf_lookup(query: str, checkpoint: Checkpoint | None) -> LeafLookup:
    """Find a leaf by index or hash and prove it into ``checkpoint``; never raises for input."""
    result = LeafLookup(query=query)
    try:
        leaf = _find_leaf(query)
    except LookupQueryError as exc:
        result.error = str(exc)
        return result
    except NotFound as exc:
        result.error = f"{exc.detail[:1].upper()}{exc.detail[1:]}."
        return result
    data = bytes(leaf.data)
    result.leaf, result.member = leaf, leaf.member
    result.leaf_hash = bytes(leaf.leaf_hash)
    result.statement = data.decode("utf-8", errors="replace")
    if checkpoint is None or leaf.index >= checkpoint.size:
        covered = f"leaves 0 to {checkpoint.size - 1}" if checkpoint and checkpoint.size else "none"
        result.pending_reason = (
            f"Leaf {leaf.index} is not sealed yet (the latest checkpoint covers {covered}). "
            "Its inclusion proof appears once the next checkpoint is signed."
        )
        return result
    result.sealed = True
    result.tree_size = checkpoint.size
    result.root_hash = bytes(checkpoint.root_hash)
    result.checkpoint_final = services.checkpoint_is_final(checkpoint)
    try:
        # Uncached on purpose: the page shows and checks what the database stores.
        result.proof, stored_root = proofs.inclusion_with_root(
            leaf.index, checkpoint.size, sealed_size=checkpoint.size
        )
    except proofs.SizeError as exc:
        result.error = f"The proof cannot be built from the stored tree: {exc}."
        return result
    try:
        # The verdict covers what is shown: the statement's bytes, up to the signed root.
        if merkle.leaf_hash(data) != result.leaf_hash:
            raise merkle.ProofError("the statement does not hash to the stored leaf hash")
        merkle.verify_inclusion(
            leaf.index, checkpoint.size, result.leaf_hash, result.proof, result.root_hash
        )
        if stored_root != result.root_hash:
            raise merkle.ProofError("the stored tree's root differs from the signed checkpoint")
    except merkle.ProofError as exc:
        result.verdict = f"Not verified: {exc}."
    else:
        result.verified = True
        result.verdict = (
            f"Verified: the path leads from leaf {leaf.index} to the root hash of the signed "
            f"checkpoint of size {checkpoint.size} (RFC 9162 inclusion proof)."
        )
    result.svg = _svg(
        charts.inclusion_path_svg(
            leaf.index, checkpoint.size, result.leaf_hash, result.proof, verified=result.verified
        )
    )
    return result


# --- the page ----------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def ledger_page(request: HtmxHttpRequest) -> HttpResponse:
    """The ledger page; an htmx lookup gets only the ``#lookup-result`` fragment."""
    query = request.GET.get("leaf", "").strip()
    checkpoint = services.checkpoint_latest()
    lookup = leaf_lookup(query, checkpoint) if query else None
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "ledger/_lookup_result.html", {"lookup": lookup})
    history = selectors.checkpoint_history()
    fork_count, fork_rows = forks.forks_latest()
    context = {
        "fork_count": fork_count,
        "forks": [ForkRow(f) for f in fork_rows],
        "panel": checkpoint_panel(checkpoint) if checkpoint else None,
        "chart": _svg(charts.size_chart_svg(history)),
        "history_count": len(history),
        "lookup": lookup,
        "query": query,
    }
    return render(request, "ledger/page.html", context)
