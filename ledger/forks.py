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

from django.db import IntegrityError, transaction
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
