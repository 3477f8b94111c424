"""``fhir``: the Bundle is valid FHIR R4, its amounts add up, and every item bills a disclosed
Procedure (item.procedureSequence -> Claim.procedure -> procedureReference -> a Procedure entry).

Intake already validated the shape. On a claim's first run, when intake validated it under the
current rules (``Claim.fhir_rules == fhir_validation.RULES_VERSION``), the views are built from the
stored JSON without the pydantic models (``fhir_validation.trusting_intake``); later runs and
batch re-verification re-validate the stored bytes in full (rules may have tightened since). Both
add what intake leaves out on purpose: totals and internal references.
"""

from __future__ import annotations

from claims import fhir_validation, money
from claims.checks import FAIL, PASS, WARN, Context, Result

NAME = "fhir"
MAX_LISTED = 20  # issues quoted in the evidence


def check(ctx: Context) -> Result:
    try:
        validated = fhir_validation.validate_bundle(money.loads(bytes(ctx.claim.body)))
    except ValueError as exc:  # FhirInvalid, or money.loads refusing the JSON
        issues = getattr(exc, "outcome", {}).get("issue", [])
        return Result(
            NAME,
            FAIL,
            f"The Bundle is not valid FHIR R4: {exc}.",
            {"issues": issues[:MAX_LISTED], "issue_count": len(issues)},
        )
    ctx.validated = validated
    problems = money.check_totals(validated.claim_json, validated.claim_expression)
    broken, unproven = _references(ctx)
    evidence = {
        "resources": len(validated.json.get("entry", [])),
        "procedures": [p.full_url for p in validated.procedures],
        "items": {str(seq): list(urls) for seq, urls in ctx.item_procedures.items()},
        "total": str(validated.total) if validated.total else None,
    }
    if problems or broken:
        evidence["amount_problems"] = [
            {
                "code": p.code,
                "expression": p.expression,
                "message": p.message,
                "expected": str(p.expected) if p.expected else None,
                "actual": str(p.actual) if p.actual else None,
            }
            for p in problems[:MAX_LISTED]
        ]
        evidence["broken_references"] = broken
        said = [p.message for p in problems[:3]] + [b["problem"] for b in broken[:3]]
        return Result(NAME, FAIL, "The Claim does not hold together: " + "; ".join(said) + ".",
                      evidence)  # fmt: skip
    if unproven:
        evidence["items_without_procedure"] = unproven
        return Result(
            NAME,
            WARN,
            f"Item(s) {', '.join(map(str, unproven))} bill no Procedure: nothing on the ledger "
            "proves them, an adjuster has to.",
            evidence,
        )
    return Result(
        NAME,
        PASS,
        f"Valid FHIR R4; the amounts add up to {validated.total}; each of the "
        f"{len(ctx.item_procedures)} item(s) bills a disclosed Procedure.",
        evidence,
    )


def _references(ctx: Context) -> tuple[list[dict], list[int]]:
    """Fill ``ctx.item_procedures``; return the broken references and the items that bill
    nothing."""
    validated = ctx.validated
    assert validated is not None
    by_sequence = {p.sequence: p for p in validated.claim_procedures}
    broken: list[dict] = []
    unproven: list[int] = []
    for item in validated.items:
        urls: list[str] = []
        if not item.procedure_sequence:
            unproven.append(item.sequence)
        for seq in item.procedure_sequence:
            line = by_sequence.get(seq)
            reference = line.reference.reference if line and line.reference else None
            target = validated.resolve(reference)
            if target is None or target.full_url is None:
                what = (
                    f"Claim.procedure {seq}, which does not exist"
                    if line is None
                    else f"Claim.procedure {seq}, whose reference {reference or '(none)'} is not "
                    "a disclosed Procedure of this Bundle"
                )
                broken.append(
                    {"item": item.sequence, "procedure_sequence": seq, "reference": reference,
                     "problem": f"item {item.sequence} bills {what}"}
                )  # fmt: skip
                continue
            urls.append(target.full_url)
        ctx.item_procedures[item.sequence] = tuple(urls)
    return broken, unproven
