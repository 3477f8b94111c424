"""``business``: rules that flag a claim for an adjuster (warn), never reject it.

* the total is above ``CLAIMS_REVIEW_ABOVE`` (in the claim's currency);
* an item's unit price is above its fee schedule entry by more than ``CLAIMS_FEE_TOLERANCE``;
* ``Claim.use`` is preauthorization or predetermination: never paid as a claim (payout refuses
  any claim whose stored ``use`` is not ``claim``);
* a Coverage in the Bundle is with another payor than the Claim's insurer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q

from claims.checks import PASS, WARN, Context, Result
from claims.models import FeeScheduleEntry

NAME = "business"


def check(ctx: Context, *, void: bool = False) -> Result | None:
    validated = ctx.validated
    if validated is None:
        return None
    if void:
        return Result(NAME, PASS, "A void request is not paid: no business rule applies.", {})
    flags: list[str] = []
    evidence: dict = {"review_above": str(settings.CLAIMS_REVIEW_ABOVE)}
    total = validated.total
    evidence["total"] = str(total) if total else None
    if total is not None and total.value > settings.CLAIMS_REVIEW_ABOVE:
        flags.append(f"the total {total} is above {settings.CLAIMS_REVIEW_ABOVE} (reviewed)")
    if validated.use != "claim":
        evidence["use"] = validated.use
        flags.append(f"a {validated.use} is never paid as a claim")
    flags += _fees(validated, evidence, ctx.prefetched.fees if ctx.prefetched else None)
    flags += _payor(validated, evidence)
    if flags:
        text = "; ".join(flags) + "."
        return Result(NAME, WARN, text[:1].upper() + text[1:], evidence)
    return Result(NAME, PASS, "No business rule flags this claim.", evidence)


def priced(validated) -> list[tuple[Any, Any]]:
    """(item, its first code) of each item with a unit price and a coded product."""
    return [(item, c) for item in validated.items if item.unit_price
            for c in item.codes[:1] if c.system and c.code]  # fmt: skip


def fee_schedule(wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], Decimal]:
    """The fee schedule entries of these (system, code, currency): one query."""
    if not wanted:
        return {}
    where = Q()
    for system, code, currency in wanted:
        where |= Q(system=system, code=code, currency=currency)
    return {
        (e.system, e.code, e.currency): e.max_unit_price
        for e in FeeScheduleEntry.objects.filter(where)
    }


def _fees(validated, evidence: dict, schedule: dict | None = None) -> list[str]:
    """Items priced above the fee schedule; ``schedule`` is a batch's prefetched entries."""
    priced_items = priced(validated)
    if not priced_items:
        return []
    if schedule is None:
        schedule = fee_schedule(
            {(c.system, c.code, item.unit_price.currency) for item, c in priced_items}
        )
    tolerance = settings.CLAIMS_FEE_TOLERANCE
    flags, seen = [], []
    for item, c in priced_items:
        price = item.unit_price
        limit = schedule.get((c.system, c.code, price.currency))
        if limit is None:
            continue
        over = price.value > limit * (1 + tolerance)
        seen.append(
            {"item": item.sequence, "code": f"{c.system}|{c.code}", "unit_price": str(price),
             "max_unit_price": str(limit), "tolerance": str(tolerance), "above": over}
        )  # fmt: skip
        if over:
            flags.append(
                f"item {item.sequence} ({c.code}) is priced {price}, above the fee schedule's "
                f"{limit} {price.currency} by more than {tolerance:.0%}"
            )
    evidence["fee_schedule"] = seen
    return flags


def _payor(validated, evidence: dict) -> list[str]:
    insurer = validated.insurer.reference if validated.insurer else None
    flags = []
    for index in validated.others:
        raw = validated.json["entry"][index]["resource"]
        if raw.get("resourceType") != "Coverage" or not insurer:
            continue
        payors = [p.get("reference") for p in raw.get("payor") or () if isinstance(p, dict)]
        if payors and insurer not in payors:
            evidence["coverage_payors"] = payors
            flags.append(f"the Coverage in entry {index} is with {', '.join(map(str, payors))}")
    return flags
