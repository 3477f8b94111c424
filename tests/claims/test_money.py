"""Money: exact Decimal amounts from the raw JSON and the FHIR Claim arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.money import (
    Money,
    Problem,
    check_totals,
    loads,
    minor_units,
    money_from_json,
    round_money,
    to_decimal,
)


def usd(value: str) -> dict:
    return {"value": Decimal(value), "currency": "USD"}


def codes(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.code, p.expression) for p in problems]


def test_loads_keeps_trailing_zeros_and_refuses_nan() -> None:
    data = loads(b'{"value": 105.00, "n": 3, "f": 0.1}')
    assert data["value"] == Decimal("105.00") and str(data["value"]) == "105.00"
    assert isinstance(data["n"], int) and data["f"] == Decimal("0.1")
    for bad in (b'{"v": NaN}', b'{"v": Infinity}', b'{"v": -Infinity}', b"[" * 100_000):
        with pytest.raises(ValueError):
            loads(bad)


def test_to_decimal_never_floats() -> None:
    assert to_decimal(Decimal("1.10")) == Decimal("1.10")
    assert to_decimal(3) == Decimal(3)
    assert to_decimal(0.1) == Decimal("0.1")  # shortest repr, not 0.1000000000000000055...
    for bad in (True, None, "1.0", float("nan"), float("inf"), Decimal("NaN"), [1]):
        assert to_decimal(bad) is None


def test_money_from_json() -> None:
    assert money_from_json(usd("105.00")) == Money(Decimal("105.00"), "USD")
    assert str(Money(Decimal("105.00"), "USD")) == "105.00 USD"
    for bad in ({"value": 1}, {"currency": "USD"}, {"value": 1, "currency": "usd"}, [], None):
        assert money_from_json(bad) is None


def test_rounding_half_up_to_minor_unit() -> None:
    assert minor_units("USD") == 2 and minor_units("JPY") == 0 and minor_units("KWD") == 3
    assert round_money(Decimal("1.005"), "USD") == Decimal("1.01")
    assert round_money(Decimal("1.004999"), "USD") == Decimal("1.00")
    assert round_money(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_money(Decimal("0.0005"), "KWD") == Decimal("0.001")


def test_consistent_claim_has_no_problem() -> None:
    claim = {
        "item": [
            {
                "quantity": {"value": 2},
                "unitPrice": usd("55.00"),
                "factor": Decimal("1.1"),
                "net": usd("121.00"),
            },
            {
                "unitPrice": usd("214.00"),
                "net": usd("214.00"),
                "detail": [
                    {"unitPrice": usd("100.00"), "net": usd("100.00")},
                    {
                        "unitPrice": usd("200.00"),
                        "factor": Decimal("0.57"),
                        "net": usd("114.00"),
                        "subDetail": [{"net": usd("14.00")}, {"net": usd("100.00")}],
                    },
                ],
            },
            {"net": usd("10"), "detail": [{"quantity": {"value": 24}}]},  # nothing to add up
        ],
        "total": usd("345.00"),
    }
    assert check_totals(claim) == []


def test_net_mismatch_reports_path_and_both_amounts() -> None:
    claim = {"item": [{"quantity": {"value": 3}, "unitPrice": usd("0.335"), "net": usd("1.00")}]}
    [problem] = check_totals(claim, base="Bundle.entry[0].resource")
    assert problem.code == "net-mismatch"
    assert problem.expression == "Bundle.entry[0].resource.item[0].net"
    assert problem.expected == Money(Decimal("1.01"), "USD")  # 1.005 rounded half-up
    assert problem.actual == Money(Decimal("1.00"), "USD")
    assert "1.01 USD" in problem.message and "1.00 USD" in problem.message
    issue = problem.to_issue()
    assert issue["expression"] == ["Bundle.entry[0].resource.item[0].net"]
    assert issue["code"] == "business-rule"


def test_detail_subdetail_and_total_mismatches() -> None:
    claim = {
        "item": [
            {
                "net": usd("100.00"),
                "detail": [
                    {"net": usd("60.00"), "subDetail": [{"net": usd("50.00")}]},
                    {"unitPrice": usd("30.00")},  # no net: counts as its computed 30.00
                ],
            }
        ],
        "total": usd("99.99"),
    }
    assert codes(check_totals(claim)) == [
        ("detail-sum-mismatch", "Claim.item[0].detail[0].net"),
        ("detail-sum-mismatch", "Claim.item[0].net"),
        ("total-mismatch", "Claim.total"),
    ]
    problems = check_totals(claim)
    assert problems[1].expected == Money(Decimal("90.00"), "USD")
    assert problems[2].expected == Money(Decimal("100.00"), "USD")


def test_total_without_items_must_be_zero() -> None:
    assert codes(check_totals({"total": usd("1.00")})) == [("total-mismatch", "Claim.total")]
    assert check_totals({"total": usd("0")}) == []


def test_mixed_currencies_are_an_error_and_stop_the_sums() -> None:
    claim = {
        "item": [
            {"unitPrice": usd("10.00"), "net": usd("10.00")},
            {"unitPrice": {"value": Decimal("5"), "currency": "EUR"}, "net": usd("99")},
        ],
        "total": usd("1"),
    }
    assert codes(check_totals(claim)) == [("currency-mismatch", "Claim.item[1].unitPrice.currency")]


def test_negative_amounts_are_errors() -> None:
    claim = {
        "item": [{"quantity": {"value": -1}, "unitPrice": usd("10.00"), "net": usd("-10.00")}],
        "total": usd("-10.00"),
    }
    assert codes(check_totals(claim)) == [
        ("negative-amount", "Claim.item[0].net.value"),
        ("negative-amount", "Claim.item[0].quantity.value"),
        ("negative-amount", "Claim.total.value"),
    ]


def test_missing_or_bad_currency_and_values() -> None:
    claim = {
        "item": [
            {"net": {"value": Decimal(1)}},
            {"net": {"value": Decimal(1), "currency": "usd"}},
            {"net": {"value": "1", "currency": "USD"}},
            {"net": {"value": Decimal("1e20"), "currency": "USD"}},
            {"net": "ten dollars"},
        ],
        "total": usd("5"),
    }
    assert [p.code for p in check_totals(claim)] == [
        "currency-missing",
        "currency-invalid",
        "amount-invalid",
        "amount-out-of-range",
        "amount-invalid",
    ]


def test_float_input_is_read_through_its_repr() -> None:
    claim = {
        "item": [
            {
                "unitPrice": {"value": 0.1, "currency": "USD"},
                "factor": 3,
                "net": {"value": 0.3, "currency": "USD"},
            }
        ]
    }
    assert check_totals(claim) == []  # 0.1 * 3 == 0.3 exactly in Decimal


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(allow_nan=True)
    | st.text(max_size=5)
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "item",
                    "detail",
                    "subDetail",
                    "net",
                    "unitPrice",
                    "quantity",
                    "factor",
                    "value",
                    "currency",
                    "total",
                ]
            )
            | st.text(max_size=3),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_check_totals_never_raises(value: object) -> None:
    problems = check_totals(value)
    assert all(isinstance(p, Problem) for p in problems)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=0, max_value=10_000, places=2),
            st.integers(min_value=1, max_value=50),
            st.decimals(min_value=0, max_value=2, places=2),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_claims_built_by_the_rule_always_add_up(lines: list) -> None:
    items = []
    for price, qty, factor in lines:
        net = round_money(price * qty * factor, "USD")
        items.append(
            {
                "quantity": {"value": qty},
                "unitPrice": usd(str(price)),
                "factor": factor,
                "net": usd(str(net)),
            }
        )
    total = sum((Decimal(str(i["net"]["value"])) for i in items), Decimal(0))
    assert check_totals({"item": items, "total": usd(str(total))}) == []
    items[0]["net"] = usd(str(items[0]["net"]["value"] + Decimal("0.01")))
    assert [p.code for p in check_totals({"item": items, "total": usd(str(total))})] == [
        "net-mismatch",
        "total-mismatch",
    ]
