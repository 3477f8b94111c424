"""``related`` (corrections and voids) and ``double_billing`` (an anchor is billed by at most one
live claim).

A correction or void names its original in ``Claim.related`` with a relationship code
``replaces`` or ``voids`` and the original's public id, as ``claim.reference = "Claim/<id>"`` or
``claim.identifier.value = "<id>"`` (docs/verification.md). Only the same provider's claims can
be named. A replacement supersedes its original (which releases the original's anchors) in the
same transaction that reserves its own, so it never trips the double-billing rule; a true
duplicate does.

The reservation is the partial unique index ``one_live_claim_per_anchor``: whoever inserts a live
row for a commitment first holds it, whatever the concurrency. These functions that write run
inside the verification's transaction, with the claim row locked.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, ProgrammingError, connection, transaction

from claims.checks import FAIL, PASS, WAIT, Context, Result, b64
from claims.models import BilledAnchor, Claim
from claims.states import ClaimStatus, claim_transition

RELATED = "related"
DOUBLE_BILLING = "double_billing"
REPLACES, VOIDS = "replaces", "voids"
CLAIM_ID_SYSTEM = "https://claimproof.example/fhir/claim-id"
_REFERENCE = re.compile(r"(?:.*/)?Claim/([0-9a-fA-F-]{36})")
S = ClaimStatus
# Originals a correction or a void can still act on (the transition table allows it).
OPEN = frozenset({S.RECEIVED, S.VERIFIED, S.NEEDS_REVIEW, S.INFO_REQUESTED, S.REJECTED})


@dataclass
class Correction:
    relationship: str  # replaces | voids
    named: str  # how the Claim names its original
    original: Claim | None


def correction(ctx: Context) -> tuple[Result | None, Correction | None]:
    """The ``related`` check, when the Claim replaces or voids another; else (None, None)."""
    validated = ctx.validated
    if validated is None:
        return None, None
    ours = [r for r in validated.related if r.relationship in (REPLACES, VOIDS)]
    if not ours:
        return None, None
    if len(ours) > 1:
        return _fail(f"The Claim replaces or voids {len(ours)} claims: it may name one."), None
    related = ours[0]
    named = _public_id(related)
    found = Correction(related.relationship or "", named or "", None)
    if named is None:
        return _fail(
            "Claim.related names its original neither as Claim/<id> nor by identifier <id> "
            "(the id our 202 answer gave)."
        ), found
    found.original = (
        Claim.objects.filter(provider_id=ctx.claim.provider_id, public_id=named)
        .exclude(pk=ctx.claim.pk)
        .first()
    )
    return judge(ctx.claim, found), found


def _public_id(related) -> str | None:
    ref = related.claim
    candidates = []
    if ref is not None and ref.reference and (m := _REFERENCE.fullmatch(ref.reference)):
        candidates.append(m[1])
    if ref is not None and ref.identifier and ref.identifier[1]:
        candidates.append(ref.identifier[1])
    if related.reference and related.reference[0] == CLAIM_ID_SYSTEM and related.reference[1]:
        candidates.append(related.reference[1])
    for value in candidates:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            continue
    return None


def judge(claim: Claim, c: Correction) -> Result:
    """Can ``claim`` replace or void ``c.original`` as it stands now?"""
    verb = "replace" if c.relationship == REPLACES else "void"
    evidence = {"relationship": c.relationship, "original": c.named}
    original = c.original
    if original is None:
        return _fail(f"There is no claim {c.named} of this provider to {verb}.", evidence)
    evidence["original_status"] = original.status
    done = S.SUPERSEDED if c.relationship == REPLACES else S.VOIDED
    if original.status in OPEN:
        return Result(RELATED, PASS, f"This claim {verb}s claim {c.named} ({original.status}).",
                      evidence)  # fmt: skip
    if original.status == done and claim.related_id == original.pk:
        return Result(RELATED, PASS, f"This claim already {verb}d claim {c.named}.", evidence)
    if original.status == S.DENIED and c.relationship == REPLACES:
        return Result(
            RELATED, PASS,
            f"This claim resubmits claim {c.named}, which was denied: nothing to supersede.",
            evidence,
        )  # fmt: skip
    if original.status == S.VERIFYING:
        return Result(
            RELATED, WAIT, f"Claim {c.named} is being verified: waiting to {verb} it.", evidence
        )
    return _fail(f"Claim {c.named} is {original.status}: it cannot be {verb}d any more.", evidence)


def _fail(sentence: str, evidence: dict | None = None) -> Result:
    return Result(RELATED, FAIL, sentence, evidence or {})


def apply(claim: Claim, c: Correction) -> Result:
    """Lock the original, judge it again and supersede or void it (inside the caller's
    transaction: a rolled-back verification leaves the original as it was)."""
    assert c.original is not None
    c.original = Claim.objects.select_for_update().get(pk=c.original.pk)
    result = judge(claim, c)
    original = c.original
    if result.outcome != PASS or original.status not in OPEN:
        return result
    to = S.SUPERSEDED if c.relationship == REPLACES else S.VOIDED
    claim_transition(
        claim=original,
        to=to,
        reason=f"{to} by claim {claim.public_id}",
        snapshot={"by": str(claim.public_id), "relationship": c.relationship},
    )
    result.evidence["original_status"] = to
    return result


# --- double billing -----------------------------------------------------------------------------


def billed(ctx: Context) -> list[tuple[bytes, int, str]]:
    """(commitment, leaf index, fullUrl) of each disclosed Procedure an item bills (every
    disclosed one when the items could not be read)."""
    urls = {u for urls in ctx.item_procedures.values() for u in urls}
    return [(d.commitment, d.leaf_index, d.full_url) for d in ctx.disclosed
            if not urls or d.full_url in urls]  # fmt: skip


def holders(claim: Claim, anchors: list[tuple[bytes, int, str]]) -> list[dict]:
    """The other live claims that bill any of these anchors."""
    where = {c: (i, u) for c, i, u in anchors}
    rows = (
        BilledAnchor.objects.filter(commitment__in=list(where), live=True)
        .exclude(claim_id=claim.pk)
        .values_list("commitment", "claim__public_id", "claim__status")
    )
    return [
        {"leaf_index": where[bytes(c)][0], "full_url": where[bytes(c)][1], "commitment": b64(c),
         "billed_by": str(public_id), "billed_by_status": status}
        for c, public_id, status in rows
    ]  # fmt: skip


def double_billed(ctx: Context, taken: list[dict]) -> Result:
    for h in taken:
        ctx.fail_procedure(h["full_url"], "double-billed")
    said = "; ".join(
        f"leaf {h['leaf_index']} is already billed by claim {h['billed_by']} "
        f"({h['billed_by_status']})"
        for h in taken[:3]
    )
    return Result(
        DOUBLE_BILLING, FAIL, f"Double billing: {said}. A procedure is paid once.",
        {"anchors": taken},
    )  # fmt: skip


def reserve_many(claims: list[tuple[Claim, list[tuple[bytes, int, str]]]]) -> bool:
    """Make each claim the live biller of its anchors, all in one statement, or none of them
    (False: someone, maybe another claim of the list, holds one; reserve each on its own)."""
    rows = [(claim.pk, c, i) for claim, anchors in claims for c, i, _ in anchors]
    if not rows:
        return True
    try:
        with transaction.atomic():  # a savepoint: a conflict undoes the whole statement only
            _upsert(rows)
    except (IntegrityError, ProgrammingError):  # a taken anchor; one anchor twice in the list
        return False
    return True


# One statement whatever the number of rows: three array parameters (config/bulk.py says why).
_UPSERT_SQL = """
INSERT INTO claims_billedanchor (claim_id, commitment, leaf_index, live)
SELECT claim_id, commitment, leaf_index, true
FROM unnest(%s::bigint[], %s::bytea[], %s::bigint[]) AS r(claim_id, commitment, leaf_index)
ON CONFLICT (claim_id, commitment) DO UPDATE SET live = true, leaf_index = EXCLUDED.leaf_index
"""


def _upsert(rows: list[tuple[int, bytes, int]]) -> None:
    """Make each (claim, commitment, leaf) a live billing row: inserted, or made live again
    (a re-verification). Raises IntegrityError when another claim bills a commitment live."""
    if connection.vendor != "postgresql":
        BilledAnchor.objects.bulk_create(
            [BilledAnchor(claim_id=c, commitment=m, leaf_index=i, live=True) for c, m, i in rows],
            update_conflicts=True,
            unique_fields=["claim", "commitment"],
            update_fields=["live", "leaf_index"],
        )
        return
    claim_ids, commitments, leaves = (list(column) for column in zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_SQL, [claim_ids, commitments, leaves])


def reserved(anchors: list[tuple[bytes, int, str]]) -> Result:
    """The result of a claim that holds ``anchors`` now."""
    evidence = {"anchors": [{"leaf_index": i, "full_url": u, "commitment": b64(c)}
                            for c, i, u in anchors]}  # fmt: skip
    leaves = ", ".join(str(i) for _, i, _ in anchors)
    return Result(
        DOUBLE_BILLING, PASS,
        f"No other live claim bills leaf {leaves}: this claim holds it now.", evidence,
    )  # fmt: skip


def reserve(ctx: Context, anchors: list[tuple[bytes, int, str]]) -> Result:
    """Make this claim the live biller of ``anchors``, or fail naming who already is."""
    claim = ctx.claim
    for _attempt in range(3):
        try:
            with transaction.atomic():  # a savepoint: the verification's transaction goes on
                _upsert([(claim.pk, c, i) for c, i, _ in anchors])
        except IntegrityError:
            if taken := holders(claim, anchors):
                return double_billed(ctx, taken)
            continue  # the holder went away between our insert and our look: try again
        return reserved(anchors)
    raise RuntimeError("the double-billing reservation kept conflicting with no holder")
