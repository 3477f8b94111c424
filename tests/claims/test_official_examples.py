"""The official HL7 R4 examples are real-world shapes: each must pass intake validation.

Every Claim example is wrapped in a collection Bundle with a Procedure; every Procedure and
Coverage example is wrapped with a Claim. We assert what is extracted and which examples'
amounts do not add up (``TOTALS_THAT_DO_NOT_ADD_UP``, found by reading the files by hand).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claims.fhir_validation import FhirInvalid, Money, validate_bundle
from claims.money import check_totals, loads

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "fhir-examples" / "r4"
if not EXAMPLES.is_dir():  # pragma: no cover - the examples are part of the shared workspace
    pytest.fail(f"official FHIR examples missing: {EXAMPLES}", pytrace=False)


def load(name: str) -> dict[str, Any]:
    return loads((EXAMPLES / name).read_bytes())


def names(prefix: str) -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob(f"{prefix}-*.json"))


def wrap(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:e{i}", "resource": r} for i, r in enumerate(resources)],
    }


# file -> (use, status, item count, Claim.total or None)
CLAIMS = {
    "Claim-100150.json": ("claim", "active", 1, None),
    "Claim-100151.json": ("claim", "active", 3, None),
    "Claim-100152.json": ("claim", "active", 1, None),
    "Claim-100153.json": ("preauthorization", "active", 3, None),
    "Claim-100154.json": ("claim", "active", 1, None),
    "Claim-100155.json": ("claim", "active", 1, None),
    "Claim-100156.json": ("claim", "active", 3, "2255.00"),
    "Claim-660150.json": ("claim", "active", 1, None),
    "Claim-660151.json": ("claim", "active", 1, None),
    "Claim-660152.json": ("claim", "active", 1, None),
    "Claim-760150.json": ("claim", "active", 1, None),
    "Claim-760151.json": ("claim", "active", 1, "90.00"),
    "Claim-760152.json": ("claim", "active", 1, "155.00"),
    "Claim-860150.json": ("claim", "active", 1, None),
    "Claim-960150.json": ("claim", "active", 1, "125.00"),
    "Claim-960151.json": ("claim", "active", 1, "125.00"),
    "Claim-MED-00050.json": ("claim", "active", 1, "12500.00"),
}

# Claim-100153 (orthodontic preauthorization): detail[4] bills 24 x 250.00 with net 250.00, and
# item[0].net 9000.00 is not the sum of its details' nets (1000 + 1500 + 500 + 250 = 3250.00).
# With detail[4].net = 6000.00 both would hold: the example's author meant 24 monthly payments.
TOTALS_THAT_DO_NOT_ADD_UP = {
    "Claim-100153.json": [
        ("net-mismatch", "Bundle.entry[0].resource.item[0].detail[4].net", "6000.00", "250.00"),
        ("detail-sum-mismatch", "Bundle.entry[0].resource.item[0].net", "3250.00", "9000.00"),
    ]
}


def test_the_example_set_is_complete() -> None:
    assert names("Claim") == sorted(CLAIMS)
    assert len(names("Procedure")) == 16 and len(names("Coverage")) == 4


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_official_claim_validates(name: str) -> None:
    bundle = wrap(load(name), load("Procedure-example.json"))
    v = validate_bundle(bundle)
    use, status, count, total = CLAIMS[name]
    assert (v.use, v.status, len(v.items)) == (use, status, count)
    assert v.total == (Money(Decimal(total), "USD") if total else None)
    assert all(i.sequence == n for n, i in enumerate(v.items, 1))
    assert all(i.net is not None and i.net.currency == "USD" for i in v.items)
    problems = check_totals(v.claim_json, v.claim_expression)
    got = [(p.code, p.expression, str(p.expected.value), str(p.actual.value)) for p in problems]
    assert got == TOTALS_THAT_DO_NOT_ADD_UP.get(name, [])


@pytest.mark.parametrize("name", names("Procedure"))
def test_official_procedure_validates(name: str) -> None:
    procedure = load(name)
    v = validate_bundle(wrap(load("Claim-100150.json"), procedure))
    [p] = v.procedures
    assert p.status == procedure["status"] and p.id == procedure["id"]
    assert p.subject is not None
    assert p.performed == (
        (procedure["performedDateTime"],) * 2
        if "performedDateTime" in procedure
        else (procedure["performedPeriod"]["start"], procedure["performedPeriod"].get("end"))
        if "performedPeriod" in procedure
        else None
    )


@pytest.mark.parametrize("name", names("Coverage"))
def test_official_coverage_validates(name: str) -> None:
    v = validate_bundle(wrap(load("Claim-100150.json"), load("Procedure-example.json"), load(name)))
    assert [type(m).__name__ for m in v.others.values()] == ["Coverage"]


def test_related_claims_and_procedures_are_extracted() -> None:
    v = validate_bundle(wrap(load("Claim-100156.json"), load("Procedure-example.json")))
    [related] = v.related
    assert related.claim is not None and related.claim.reference == "Claim/100151"
    assert related.relationship == "associated"
    assert related.reference == (None, "CASE156746B")
    [proc] = v.claim_procedures
    assert (proc.sequence, proc.reference, proc.date) == (1, None, "2014-07-04")
    assert v.items[2].procedure_sequence == (1,)
    assert v.items[0].factor == Decimal("0.75")


def test_claim_identified_by_identifier() -> None:
    v = validate_bundle(wrap(load("Claim-100154.json"), load("Procedure-example.json")))
    [insurance] = v.insurance
    assert insurance.coverage is not None and insurance.coverage.reference is None
    assert insurance.coverage.identifier == ("http://www.jurisdiction.com/nationalplan", "123AB345")


def test_not_done_procedure_is_visible() -> None:
    v = validate_bundle(wrap(load("Claim-100150.json"), load("Procedure-ambulation.json")))
    assert v.procedures[0].status == "not-done"  # valid FHIR; billing it is refused later


# --- the traps measured in fhir.resources 8.3 (issue 3) -------------------------------------


def test_trap_bogus_status_is_refused_by_us() -> None:
    claim = load("Claim-100150.json")
    claim["status"] = "bogus"
    from fhir.resources.R4B.claim import Claim

    Claim.model_validate(claim)  # the library itself lets it through
    with pytest.raises(FhirInvalid) as info:
        validate_bundle(wrap(claim, load("Procedure-example.json")))
    [issue] = info.value.outcome["issue"]
    assert (issue["code"], issue["expression"]) == (
        "code-invalid",
        ["Bundle.entry[0].resource.status"],
    )


def test_trap_unknown_resource_type_is_an_outcome() -> None:
    from fhir.resources.R4B.bundle import Bundle

    bundle = wrap(
        load("Claim-100150.json"), load("Procedure-example.json"), {"resourceType": "Nope"}
    )
    with pytest.raises(KeyError):
        Bundle.model_validate(bundle)  # the library's bare KeyError
    with pytest.raises(FhirInvalid) as info:
        validate_bundle(bundle)
    assert info.value.outcome["resourceType"] == "OperationOutcome"
    [issue] = info.value.outcome["issue"]
    assert issue["expression"] == ["Bundle.entry[2].resource.resourceType"]


def test_trap_decimal_precision_is_kept() -> None:
    raw = (EXAMPLES / "Claim-100151.json").read_bytes()
    assert b'"value": 105.00' in raw
    v = validate_bundle(wrap(loads(raw), load("Procedure-example.json")))
    assert v.items[1].unit_price == Money(Decimal("105.00"), "USD")
    assert str(v.items[1].unit_price.value) == "105.00"
    assert "105.0," in v.claim.model_dump_json() or "105.0}" in v.claim.model_dump_json()
    assert json.loads(raw, parse_float=Decimal)["item"][1]["net"]["value"].as_tuple().exponent == -2
