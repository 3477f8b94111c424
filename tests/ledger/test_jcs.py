"""The fast RFC 8785 serialiser (ledger.jcs: commitments, signed payloads, the audit trail) gives
the rfc8785 package's bytes for every JSON value, and refuses what has no canonical form with the
package's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.jcs import canonical

EXAMPLES = sorted(
    (Path(__file__).resolve().parents[3] / "shared" / "fhir-examples" / "r4").glob("*.json")
)

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # lone surrogates have no UTF-8
    max_size=12,
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_the_same_bytes_as_the_rfc8785_package(value):
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ufb01": 2, "a": 3},  # UTF-16 order differs from code point order
        {"s": '\x00\x1f\x7f"\\\u2028\b\f\n\r\t/é'},
        [1.0, 1.5, -0.0, 1e21, 1e-7, 100, 2**53 - 1],
    ],
)
def test_edge_cases(value):
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (2**53, rfc8785.IntegerDomainError),
        (-(2**60), rfc8785.IntegerDomainError),
        (float("nan"), rfc8785.FloatDomainError),
        ({"a": object()}, rfc8785.CanonicalizationError),
        ("\ud800", rfc8785.CanonicalizationError),
        ({1: "x"}, rfc8785.CanonicalizationError),
    ],
)
def test_no_canonical_form_is_refused_with_the_packages_errors(value, error):
    with pytest.raises(error):
        canonical(value)


def test_every_official_example_as_the_package_writes_it():
    assert len(EXAMPLES) > 40
    for path in EXAMPLES:
        value = json.loads(path.read_bytes())
        assert canonical(value) == rfc8785.dumps(value), path.name
