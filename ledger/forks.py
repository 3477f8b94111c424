"""Evidence of a forked log: two checkpoints signed by its key that no consistency proof joins.

A witness that refuses a log-signed checkpoint because the consistency proof fails (422) or
because it already cosigned another tree of the same size (409) holds such a pair: the checkpoint
it cosigned last and the one it refused. :func:`fork_record` keeps both (``ForkEvidence``, append
only, one row per witness and conflicting tree); the ledger page shows them as a banner and the
admin lists them.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ledger.models import ForkEvidence

log = logging.getLogger(__name__)


def proof_text(proof: list[bytes]) -> str:
    """The proof as the tlog-witness request writes it: one base64 hash a line."""
    return "".join(base64.b64encode(h).decode("ascii") + "\n" for h in proof)


def fork_record(
    *,
    origin: str,
    witness: str,
    reported_by: str,
    kind: str,
    cosigned_size: int,
    cosigned_root: bytes | None,
    cosigned_note: str,
    conflicting_size: int,
    conflicting_root: bytes,
    conflicting_note: str,
    old_size: int,
    proof: list[bytes],
    detail: str,
) -> ForkEvidence | None:
    """Keep the evidence; returns the new row, or None when this witness already reported this
    tree. Never raises for a duplicate, so a refusal is answered whatever happens here."""
    log.error(
        "FORK of %s: witness %s refused size %d (%s) after cosigning size %d: %s",
        origin,
        witness,
        conflicting_size,
        base64.b64encode(conflicting_root).decode(),
        cosigned_size,
        detail,
    )
    try:
        with transaction.atomic():
            return ForkEvidence.objects.create(
                origin=origin,
                witness=witness,
                reported_by=reported_by,
                kind=kind,
                cosigned_size=cosigned_size,
                cosigned_root=cosigned_root,
                cosigned_note=cosigned_note,
                conflicting_size=conflicting_size,
                conflicting_root=conflicting_root,
                conflicting_note=conflicting_note,
                old_size=old_size,
                proof=proof_text(proof),
                detail=detail[:2000],
                detected_at=timezone.now(),
            )
    except IntegrityError:
        return None  # already recorded: asking again is no new evidence


def forks_latest(limit: int = 5) -> tuple[int, list[ForkEvidence]]:
    """How many forks are recorded, and the newest ``limit`` of them (for the ledger page)."""
    rows = list(ForkEvidence.objects.order_by("-detected_at", "-id")[: limit + 1])
    count = len(rows) if len(rows) <= limit else ForkEvidence.objects.count()
    return count, rows[:limit]


# --- for verifiers: is this tree one the evidence says is not the history witnesses cosigned? --


def _contradicting(origin: str, size: int, root: bytes, include_reported: bool) -> Q:
    """Rows whose evidence contradicts the tree ``(size, root)`` of ``origin``."""
    refused = Q(conflicting_size=size, conflicting_root=root)
    # Another tree of a size a witness cosigned: two trees of one size, only one cosigned.
    other_of_cosigned_size = Q(cosigned_size=size, cosigned_root__isnull=False) & ~Q(
        cosigned_root=root
    )
    where = Q(origin=origin) & (refused | other_of_cosigned_size)
    if not include_reported:
        where &= Q(reported_by=ForkEvidence.Reporter.WITNESS)
    return where


def checkpoint_contradicted(
    origin: str, size: int, root: bytes, *, include_reported: bool = False
) -> ForkEvidence | None:
    """The newest fork evidence showing that the tree ``(size, root)`` of log ``origin`` is not
    the history the witnesses cosigned, or None (one query on a table that is empty unless the
    log forked).

    A tree is contradicted when a witness refused it (it is the row's conflicting tree), or when
    a witness cosigned *another* tree of the same size. A claim proven only against such a tree
    must not be verified. By default only evidence held by this node's own witness counts: those
    rows keep both checkpoints as the log signed them, so anyone can check them. With
    ``include_reported`` the operator's records of a remote witness's refusal count too; those
    are that witness's word (a dishonest witness could hold claims back with them).
    """
    return (
        ForkEvidence.objects.filter(_contradicting(origin, size, bytes(root), include_reported))
        .order_by("-detected_at", "-id")
        .first()
    )


def checkpoints_contradicted(
    origin: str, trees: Iterable[tuple[int, bytes]], *, include_reported: bool = False
) -> dict[tuple[int, bytes], ForkEvidence]:
    """:func:`checkpoint_contradicted` for many trees in one query: ``{(size, root): newest
    evidence}`` for the contradicted ones only."""
    wanted = {(int(size), bytes(root)) for size, root in trees}
    if not wanted:
        return {}
    where = Q()
    for size, root in wanted:
        where |= _contradicting(origin, size, root, include_reported)
    found: dict[tuple[int, bytes], ForkEvidence] = {}
    for row in ForkEvidence.objects.filter(where).order_by("-detected_at", "-id"):
        conflicting = (row.conflicting_size, bytes(row.conflicting_root))
        for size, root in wanted:
            if (size, root) in found:
                continue
            if conflicting == (size, root) or (
                row.cosigned_root is not None
                and row.cosigned_size == size
                and bytes(row.cosigned_root) != root
            ):
                found[(size, root)] = row
    return found
