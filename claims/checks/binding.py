"""``binding``: the anchored Procedures are this provider's, billable, about this patient, and
their dates are in order.

* the leaf's member is the submitting provider's member;
* performed (performedDateTime, or performedPeriod's end) no later than Claim.created, Claim.created
  no later than our receipt, and the anchor on the ledger before our receipt;
* Claim.patient is each Procedure's subject;
* a Procedure ``not-done`` or ``entered-in-error`` is not billable (fail); one not completed
  (``in-progress``, ``on-hold``...) is reviewed (warn);
* a Coverage in the Bundle covers the date of service.
Dates compare as intervals (claims/checks/dates.py): only a certain disorder fails.
"""

from __future__ import annotations

from django.conf import settings

from claims.checks import FAIL, PASS, WARN, Context, Result, iso
from claims.checks.dates import certainly_after, interval, point

NAME = "binding"
NOT_BILLABLE = frozenset({"not-done", "entered-in-error"})
REVIEWED = frozenset({"preparation", "in-progress", "on-hold", "unknown"})


def check(ctx: Context) -> Result | None:
    validated = ctx.validated
    if validated is None:
        return None  # the fhir check failed: nothing to bind
    claim = ctx.claim
    received = point(claim.created_at)
    fails: list[str] = []
    warns: list[str] = []
    evidence: dict = {
        "provider_member": claim.provider.member.name,
        "claim_created": validated.created,
        "received_at": iso(claim.created_at),
        "patient": validated.patient.reference if validated.patient else None,
        "procedures": [],
    }
    created = interval(validated.created)
    if created is None:
        fails.append(f"Claim.created {validated.created!r} is not a date")
    elif certainly_after(created, (received[0], received[1] + settings.LEDGER_ANCHOR_MAX_SKEW)):
        fails.append(f"the Claim is dated {validated.created}, after we received it")
    service_dates = []
    for proc in validated.procedures:
        url = proc.full_url or f"entry {proc.index}"
        label = f"Procedure {url}"
        performed = proc.performed
        leaf = ctx.leaves.get(url)
        seen = {
            "full_url": url,
            "status": proc.status,
            "subject": proc.subject.reference if proc.subject else None,
            "performed": list(performed) if performed else None,
            "leaf_member": leaf.member if leaf else None,
            "anchored_at": iso(leaf.received_at) if leaf else None,
        }
        evidence["procedures"].append(seen)
        problems = []
        if leaf is not None and leaf.member_id != claim.provider.member_id:
            problems.append(
                f"{label} was anchored by {leaf.member}, not by the submitting provider "
                f"({claim.provider.member.name})"
            )
        if proc.status in NOT_BILLABLE:
            problems.append(f"{label} has status {proc.status}: it cannot be billed")
        elif proc.status in REVIEWED:
            warns.append(f"{label} has status {proc.status}, not completed")
        if (validated.patient and proc.subject) and validated.patient != proc.subject:
            problems.append(
                f"{label} is about {proc.subject.reference or proc.subject.identifier}, the Claim "
                f"about {validated.patient.reference or validated.patient.identifier}"
            )
        when = _performed(performed)
        if when is None:
            warns.append(f"{label} says no time it was performed")
        else:
            service_dates.append(when)
            if created is not None and certainly_after(when, created):
                problems.append(f"{label} was performed after the Claim was created")
        if leaf is not None and leaf.received_at > claim.created_at:
            problems.append(
                f"{label} was anchored ({iso(leaf.received_at)}) after we received the claim"
            )
        if problems:
            ctx.fail_procedure(url, "binding")
        fails += problems
    fails += _coverage(ctx, service_dates, evidence)
    if fails:
        return Result(NAME, FAIL, _sentence(fails), evidence)
    if warns:
        return Result(NAME, WARN, _sentence(warns), evidence)
    return Result(
        NAME,
        PASS,
        f"The {len(validated.procedures)} Procedure(s) were anchored by "
        f"{claim.provider.member.name}, are about the Claim's patient, and were performed before "
        "the Claim was created and anchored before we received it.",
        evidence,
    )


def _performed(performed: tuple[str | None, str | None] | None):
    if not performed:
        return None
    return interval(performed[1] or performed[0])


def _coverage(ctx: Context, service_dates: list, evidence: dict) -> list[str]:
    """A Coverage in the Bundle must cover every date of service (its period, its patient)."""
    validated = ctx.validated
    assert validated is not None
    problems = []
    for index in validated.others:
        raw = validated.json["entry"][index]["resource"]
        if raw.get("resourceType") != "Coverage":
            continue
        period = raw.get("period") or {}
        start, end = interval(period.get("start")), interval(period.get("end"))
        evidence.setdefault("coverage", []).append(
            {"entry": index, "status": raw.get("status"), "period": period}
        )
        if raw.get("status") in {"cancelled", "entered-in-error"}:
            problems.append(f"the Coverage in entry {index} is {raw['status']}")
        for when in _item_dates(validated) or service_dates:
            if (start and certainly_after(start, when)) or (end and certainly_after(when, end)):
                problems.append(
                    f"the Coverage in entry {index} ({period.get('start', '…')} to "
                    f"{period.get('end', '…')}) does not cover the date of service"
                )
                break
        beneficiary = (raw.get("beneficiary") or {}).get("reference")
        patient = validated.patient.reference if validated.patient else None
        if beneficiary and patient and beneficiary != patient:
            problems.append(f"the Coverage in entry {index} is for {beneficiary}, not {patient}")
    return problems


def _item_dates(validated) -> list:
    out = []
    for item in validated.items:
        if item.serviced_date and (when := interval(item.serviced_date)):
            out.append(when)
        elif item.serviced_period:
            start, end = (interval(v) for v in item.serviced_period)
            if start or end:
                out.append(((start or end)[0], (end or start)[1]))
    return out


def _sentence(parts: list[str]) -> str:
    text = "; ".join(parts[:5]) + (" (and more)" if len(parts) > 5 else "") + "."
    return text[:1].upper() + text[1:]
