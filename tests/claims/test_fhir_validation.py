"""validate_bundle: R4B models, our shape and code rules, FHIRPath-located OperationOutcomes."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claims.fhir_validation import (
    CLAIM_STATUS,
    CLAIM_USE,
    MAX_ENTRIES,
    PROCEDURE_STATUS,
    FhirInvalid,
    Money,
    Ref,
    ValidatedBundle,
    validate_bundle,
)
from claims.money import loads

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "fhir-examples" / "r4"


def example(name: str) -> dict[str, Any]:
    return loads((EXAMPLES / f"{name}.json").read_bytes())


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


@pytest.fixture
def typical() -> dict[str, Any]:
    """One Claim with 3 items (one with details) and 2 Procedures."""
    claim = example("Claim-100151")
    claim["procedure"] = [
        {
            "sequence": 1,
            "procedureReference": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
        },
        {"sequence": 2, "procedureReference": {"reference": "Procedure/biopsy"}},
    ]
    claim["item"][0]["procedureSequence"] = [1]
    claim["item"][1]["procedureSequence"] = [2]
    claim["item"][0]["quantity"] = {"value": 1}
    claim["item"][0]["factor"] = Decimal("1.0")
    claim["related"] = [
        {
            "claim": {"reference": "Claim/100150"},
            "relationship": {"coding": [{"code": "prior"}]},
            "reference": {"system": "http://happyvalley.com/claim", "value": "12345"},
        }
    ]
    claim["total"] = {"value": Decimal("1340.57"), "currency": "USD"}
    return bundle(claim, example("Procedure-example"), example("Procedure-biopsy"))


def outcome_of(data: object) -> dict[str, Any]:
    with pytest.raises(FhirInvalid) as info:
        validate_bundle(data)
    outcome = info.value.outcome
    OperationOutcome.model_validate(outcome)  # what we answer is itself valid FHIR
    return outcome


def located(data: object) -> list[tuple[str, str]]:
    return [(i["code"], i["expression"][0]) for i in outcome_of(data)["issue"]]


def test_typical_bundle_accessors(typical: dict[str, Any]) -> None:
    v = validate_bundle(typical)
    assert isinstance(v, ValidatedBundle)
    assert (v.use, v.status, v.created) == ("claim", "active", "2014-08-16")
    assert v.patient == Ref("Patient/1")
    assert v.insurer == Ref("Organization/2") and v.provider == Ref("Organization/1")
    assert [(i.sequence, i.focal, i.coverage) for i in v.insurance] == [
        (1, True, Ref("Coverage/9876B1"))
    ]
    [related] = v.related
    assert related.claim == Ref("Claim/100150") and related.relationship == "prior"
    assert related.reference == ("http://happyvalley.com/claim", "12345")
    items = v.items
    assert [i.sequence for i in items] == [1, 2, 3]
    assert [i.code for i in items] == ["1200", "21211", "27211"]
    assert items[0].quantity == Decimal(1) and items[0].factor == Decimal("1.0")
    assert items[1].unit_price == Money(Decimal("105.00"), "USD")
    assert str(items[1].net.value) == "105.00"  # not 105.0
    assert items[1].serviced_date == "2014-08-16" and items[1].serviced_period is None
    assert [i.procedure_sequence for i in items] == [(1,), (2,), ()]
    assert v.total == Money(Decimal("1340.57"), "USD")
    assert v.claim_expression == "Bundle.entry[0].resource"
    assert v.claim_json is typical["entry"][0]["resource"]
    # Claim.procedure -> disclosed Procedures, by fullUrl or by Procedure/id
    resolved = [v.resolve(p.reference.reference) for p in v.claim_procedures]
    assert [p.id for p in resolved] == ["example", "biopsy"]
    assert v.resolve("Procedure/nope") is None and v.resolve(None) is None
    p0, p1 = v.procedures
    assert (p0.index, p0.status, p0.subject) == (1, "completed", Ref("Patient/example"))
    assert p0.performed == ("2013-04-05", "2013-04-05")
    assert p1.performed == ("2014-02-03", "2014-02-03")
    assert p0.codes[0].code == "80146002"


def test_accepts_float_parsed_json_too(typical: dict[str, Any]) -> None:
    data = json.loads(json.dumps(typical, default=float))
    v = validate_bundle(data)
    assert v.items[1].net == Money(Decimal("105.0"), "USD")  # what float parsing already lost


def test_optional_resources_are_validated_and_kept(typical: dict[str, Any]) -> None:
    typical["entry"].append({"resource": example("Coverage-9876B1")})
    v = validate_bundle(typical)
    assert type(v.others[3]).__name__ == "Coverage"
    typical["entry"][3]["resource"]["status"] = 7
    assert located(typical) == [("structure", "Bundle.entry[3].resource.status")]


# --- shape rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, 1, "Bundle", [], [{"resourceType": "Bundle"}], True])
def test_not_an_object(data: object) -> None:
    assert located(data) == [("structure", "Bundle")]


def test_wrong_resource_type(typical: dict[str, Any]) -> None:
    typical["resourceType"] = "Claim"
    assert located(typical) == [("structure", "Bundle.resourceType")]


def test_bundle_type_must_be_collection(typical: dict[str, Any]) -> None:
    typical["type"] = "transaction"
    assert located(typical) == [("code-invalid", "Bundle.type")]
    del typical["type"]
    assert located(typical) == [("required", "Bundle.type")]


def test_entries_required() -> None:
    assert ("required", "Bundle.entry") in located({"resourceType": "Bundle", "type": "collection"})
    assert located({"resourceType": "Bundle", "type": "collection", "entry": {}}) == [
        ("structure", "Bundle.entry")
    ]


def test_exactly_one_claim_and_a_procedure(typical: dict[str, Any]) -> None:
    claim, proc1, _ = (e["resource"] for e in typical["entry"])
    assert located(bundle(proc1)) == [("required", "Bundle.entry")]
    assert located(bundle(claim)) == [("required", "Bundle.entry")]
    two = bundle(claim, proc1, copy.deepcopy(claim))
    two["entry"][2]["resource"]["id"] = "other"
    assert located(two) == [("structure", "Bundle.entry[2]")]


def test_only_accepted_resource_types(typical: dict[str, Any]) -> None:
    typical["entry"].append({"resource": {"resourceType": "Observation", "status": "final"}})
    assert located(typical) == [("not-supported", "Bundle.entry[3].resource.resourceType")]


def test_unknown_resource_type_is_an_outcome_not_a_key_error(typical: dict[str, Any]) -> None:
    typical["entry"].append({"resource": {"resourceType": "NoSuchThing"}})
    assert located(typical) == [("not-supported", "Bundle.entry[3].resource.resourceType")]
    del typical["entry"][3]
    typical["entry"][1]["resource"]["contained"] = [{"resourceType": "NoSuchThing", "id": "x"}]
    assert located(typical) == [
        ("not-supported", "Bundle.entry[1].resource.contained[0].resourceType")
    ]


def test_entries_need_a_resource_and_unique_full_urls(typical: dict[str, Any]) -> None:
    typical["entry"][2]["fullUrl"] = typical["entry"][1]["fullUrl"]
    typical["entry"].append({"fullUrl": "urn:uuid:x"})
    typical["entry"].append({"resource": copy.deepcopy(typical["entry"][1]["resource"])})
    assert located(typical) == [
        ("duplicate", "Bundle.entry[2].fullUrl"),
        ("required", "Bundle.entry[3].resource"),
        ("duplicate", "Bundle.entry[4].resource.id"),
    ]


def test_envelope_is_validated(typical: dict[str, Any]) -> None:
    typical["signature"] = {"type": "nope"}
    typical["timestamp"] = "yesterday"
    typical["entry"][0]["search"] = 5
    got = located(typical)
    assert ("value", "Bundle.timestamp") in got
    assert ("structure", "Bundle.entry[0].search") in got
    assert any(path.startswith("Bundle.signature") for _, path in got)


# --- codes fhir.resources does not check ---------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "key", "allowed"),
    [(0, "status", CLAIM_STATUS), (0, "use", CLAIM_USE), (1, "status", PROCEDURE_STATUS)],
)
def test_codes_we_rely_on(
    typical: dict[str, Any], entry: int, key: str, allowed: frozenset
) -> None:
    for code in allowed:
        typical["entry"][entry]["resource"][key] = code
        validate_bundle(typical)
    typical["entry"][entry]["resource"][key] = "bogus"
    outcome = outcome_of(typical)
    [issue] = outcome["issue"]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == [f"Bundle.entry[{entry}].resource.{key}"]
    assert "'bogus'" in issue["diagnostics"]


# --- pydantic errors become FHIRPath --------------------------------------------------------


def test_bad_decimal_is_located(typical: dict[str, Any]) -> None:
    typical["entry"][0]["resource"]["item"][0]["unitPrice"]["value"] = "abc"
    outcome = outcome_of(typical)
    [issue] = outcome["issue"]
    assert issue["severity"] == "error" and issue["code"] == "value"
    assert issue["expression"] == ["Bundle.entry[0].resource.item[0].unitPrice.value"]
    assert "'abc'" in issue["diagnostics"]


def test_many_errors_each_located(typical: dict[str, Any]) -> None:
    claim = typical["entry"][0]["resource"]
    del claim["patient"]
    claim["item"][2]["detail"][1]["colour"] = "blue"
    claim["item"][1]["sequence"] = 0
    claim["_status"] = {"extension": [{"url": "x", "valueNope": 1}]}
    claim["created"] = "2014-13-45"
    claim["item"][0]["servicedPeriod"] = {"start": "2014-08-16"}  # servicedDate is there too
    typical["entry"][2]["resource"]["subject"] = "Patient/1"
    assert sorted(located(typical)) == sorted(
        [
            ("required", "Bundle.entry[0].resource.patient"),
            ("structure", "Bundle.entry[0].resource.item[2].detail[1].colour"),
            ("value", "Bundle.entry[0].resource.item[1].sequence"),
            ("structure", "Bundle.entry[0].resource.status.extension[0].valueNope"),
            ("value", "Bundle.entry[0].resource.created"),
            ("value", "Bundle.entry[0].resource.item[0]"),
            ("structure", "Bundle.entry[2].resource.subject"),  # a string, not a Reference
        ]
    )


def test_objects_sent_as_json_strings_are_refused(typical: dict[str, Any]) -> None:
    """fhir.resources parses a JSON *string* given for an object: the models would see an item
    or an amount that every reader of the raw JSON (totals, accessors) misses."""
    claim = typical["entry"][0]["resource"]
    claim["item"][0]["unitPrice"] = '{"value": 1e3, "currency": "USD"}'
    claim["item"][1] = json.dumps(claim["item"][1], default=str)
    typical["entry"][1]["resource"]["subject"] = ' {"reference": "Patient/other"}'
    assert sorted(located(typical)) == [
        ("structure", "Bundle.entry[0].resource.item[0].unitPrice"),
        ("structure", "Bundle.entry[0].resource.item[1]"),
        ("structure", "Bundle.entry[1].resource.subject"),
    ]
    typical["signature"] = json.dumps(
        {"type": [{"code": "x"}], "when": "2020-01-01T00:00:00Z", "who": {"reference": "A/b"}}
    )
    assert located(typical) == [("structure", "Bundle.signature")]  # the envelope comes first


def test_strings_that_look_like_json_are_fine_where_strings_belong(
    typical: dict[str, Any],
) -> None:
    typical["entry"][0]["resource"]["item"][0]["productOrService"]["text"] = '{"a": 1}'
    typical["entry"][0]["resource"]["id"] = "x"
    validate_bundle(typical)


def test_odd_keys_are_quoted_and_truncated(typical: dict[str, Any]) -> None:
    typical["entry"][0]["resource"]["a b`" + "x" * 10_000] = 1
    [(code, path)] = located(typical)
    assert code == "structure"
    assert path.startswith("Bundle.entry[0].resource.`a b'x") and len(path) < 100


def test_amounts_need_value_and_currency(typical: dict[str, Any]) -> None:
    claim = typical["entry"][0]["resource"]
    del claim["item"][0]["unitPrice"]["currency"]
    del claim["item"][2]["detail"][0]["net"]["value"]
    claim["total"]["currency"] = "usd"
    assert located(typical) == [
        ("required", "Bundle.entry[0].resource.total"),
        ("required", "Bundle.entry[0].resource.item[0].unitPrice"),
        ("required", "Bundle.entry[0].resource.item[2].detail[0].net"),
    ]


def test_issue_count_is_capped(typical: dict[str, Any]) -> None:
    for n in range(500):
        typical["entry"][0]["resource"][f"junk{n}"] = n
    issues = outcome_of(typical)["issue"]
    assert len(issues) == 100 and issues[-1]["code"] == "too-costly"


def test_cost_is_bounded(typical: dict[str, Any]) -> None:
    """Too many entries are refused before any model is built; a bad shape before the models."""
    procedure = typical["entry"][1]
    typical["entry"] += [procedure] * MAX_ENTRIES
    assert located(typical) == [("too-costly", "Bundle.entry")]
    del typical["entry"][3:]
    typical["entry"].append({"resource": {"resourceType": "Observation"}})
    typical["entry"][0]["resource"]["status"] = 5  # not reported: the shape is refused first
    assert located(typical) == [("not-supported", "Bundle.entry[3].resource.resourceType")]


def test_fhir_invalid_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        validate_bundle("nope")


# --- fuzzing: an OperationOutcome or a ValidatedBundle, never another exception -------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.decimals()
    | st.text(max_size=8)
    | st.sampled_from(["Claim", "Procedure", "Bundle", "collection", "Nope", "Patient/1"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["resourceType", "id"]), children, max_size=4
        )
    ),
    max_leaves=25,
)
resource_types = st.sampled_from(
    [
        "Claim",
        "Procedure",
        "Coverage",
        "Patient",
        "Organization",
        "Practitioner",
        "Observation",
        "Bundle",
        "NoSuchThing",
        "",
        "claim",
        "R4.Claim",
    ]
) | st.text(max_size=12)


def check(data: object) -> None:
    try:
        result = validate_bundle(data)
    except FhirInvalid as exc:
        issues = exc.outcome["issue"]
        assert 1 <= len(issues) <= 100
        for issue in issues:
            assert issue["severity"] == "error" and isinstance(issue["code"], str)
            assert isinstance(issue["diagnostics"], str) and len(issue["diagnostics"]) < 2_000
            assert isinstance(issue["expression"][0], str)
    else:
        assert isinstance(result, ValidatedBundle)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_any_json(data: object) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=5))
def test_fuzz_random_entries(entries: list) -> None:
    check({"resourceType": "Bundle", "type": "collection", "entry": entries})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(resource_types, st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
        max_size=4,
    )
)
def test_fuzz_resources_of_any_type(resources: list) -> None:
    entries = [{"resource": {"resourceType": rt, **body}} for rt, body in resources]
    check({"resourceType": "Bundle", "type": "collection", "entry": entries})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_typical_bundle(data: st.DataObject) -> None:
    """Replace one element of a valid Bundle anywhere in the tree with a random JSON value."""
    claim = example("Claim-100151")
    doc = bundle(claim, example("Procedure-example"), example("Procedure-biopsy"))
    node: Any = doc
    for _ in range(data.draw(st.integers(1, 8))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = data.draw(json_values)
        break
    check(doc)


def test_deep_nesting_and_huge_strings(typical: dict[str, Any]) -> None:
    deep: Any = "x"
    for _ in range(5_000):
        deep = [deep]
    typical["entry"][0]["resource"]["item"][0]["extension"] = deep
    check(typical)
    nested_ext: dict[str, Any] = {"url": "u", "valueString": "x"}
    for _ in range(400):
        nested_ext = {"url": "u", "extension": [nested_ext]}
    typical["entry"][0]["resource"]["item"][0]["extension"] = [nested_ext]
    check(typical)
    typical["entry"][0]["resource"]["item"][0]["extension"] = [
        {"url": "u", "valueString": "y" * 5_000_000}
    ]
    check(typical)
    typical["entry"][0]["resource"]["id"] = "z" * 5_000_000
    issues = outcome_of(typical)["issue"]
    assert all(len(i["diagnostics"]) < 500 for i in issues)
    check({"resourceType": "Bundle", "type": "collection", "entry": [[[[[[]]]]]] * 1000})
