"""Money as ``Decimal`` with a currency, and the arithmetic a FHIR R4 Claim must satisfy.

Pure Python (stdlib only). Amounts are read from the JSON as received, never from re-serialised
``fhir.resources`` models: those turn ``105.00`` into ``105.0`` and go through ``float``. Parse the
request body with :func:`loads` (``parse_float=Decimal``) and hand the result to
:func:`check_totals`.

FHIR's rule (R4 ``Claim.item.net``): ``net = quantity x unitPrice x factor``, with a missing
quantity or factor counting as 1. A line with details is also the sum of its details' nets (and a
detail of its subDetails'); ``Claim.total`` is the sum of the item nets. Computed amounts are
rounded half-up to the currency's minor unit (ISO 4217) before they are compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

__all__ = [
    "MAX_ABS_AMOUNT",
    "Money",
    "Problem",
    "check_totals",
    "iter_money",
    "loads",
    "minor_units",
    "money_from_json",
    "round_money",
    "to_decimal",
]

# ISO 4217 currencies whose minor unit is not 2 digits (the default).
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
_CURRENCY = re.compile(r"[A-Z]{3}")
MAX_ABS_AMOUNT = Decimal("1e15")  # beyond any real claim; keeps Decimal arithmetic exact and cheap
_MAX_DIGITS = 30  # significant digits accepted in one amount


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(body: bytes | str) -> Any:
    """Parse JSON keeping every non-integer number as an exact ``Decimal``.

    ``NaN`` and ``Infinity`` (which ``json`` accepts by default) are refused; any failure,
    including nesting too deep for the parser, raises ``ValueError``.
    """
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def minor_units(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (ISO 4217; 2 unless listed)."""
    return _MINOR_UNITS.get(currency, 2)


def round_money(value: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit (``1.005 USD`` -> ``1.01``)."""
    with localcontext(prec=60):
        return value.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one ISO 4217 currency."""

    value: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.value} {self.currency}"

    def to_fhir(self) -> dict[str, Any]:
        """FHIR ``Money`` JSON (the value stays a ``Decimal``: serialise it as a JSON number)."""
        return {"value": self.value, "currency": self.currency}


@dataclass(frozen=True, slots=True)
class Problem:
    """One inconsistency, located by a FHIRPath expression, with both amounts when relevant."""

    code: str  # e.g. net-mismatch, detail-sum-mismatch, total-mismatch, currency-mismatch
    expression: str
    message: str
    expected: Money | None = None
    actual: Money | None = None

    def to_issue(self) -> dict[str, Any]:
        """This problem as a FHIR ``OperationOutcome.issue`` (business-rule, error)."""
        return {
            "severity": "error",
            "code": "business-rule" if "mismatch" in self.code else "value",
            "details": {"text": self.code},
            "diagnostics": self.message,
            "expression": [self.expression],
        }


def to_decimal(value: object) -> Decimal | None:
    """A JSON number as an exact ``Decimal``; ``None`` for anything else (booleans included).

    A ``float`` (from a dict parsed without :func:`loads`) goes through its shortest ``repr``,
    which gives back the literal for amounts of up to 15 significant digits.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    return None


def money_from_json(obj: object) -> Money | None:
    """A FHIR ``Money`` dict as :class:`Money`; ``None`` when value or currency is unusable."""
    if not isinstance(obj, Mapping):
        return None
    value = to_decimal(obj.get("value"))
    currency = obj.get("currency")
    if value is None or not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        return None
    return Money(value, currency)


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def iter_money(claim: Mapping[str, Any], base: str = "Claim") -> Iterator[tuple[str, object]]:
    """Every amount the totals rest on: ``(FHIRPath, raw JSON)`` for total, unitPrice and net."""
    if "total" in claim:
        yield f"{base}.total", claim["total"]
    for i, item in enumerate(_list(claim, "item")):
        if not isinstance(item, Mapping):
            continue
        path = f"{base}.item[{i}]"
        yield from _line_money(item, path)
        for j, detail in enumerate(_list(item, "detail")):
            if not isinstance(detail, Mapping):
                continue
            dpath = f"{path}.detail[{j}]"
            yield from _line_money(detail, dpath)
            for k, sub in enumerate(_list(detail, "subDetail")):
                if isinstance(sub, Mapping):
                    yield from _line_money(sub, f"{dpath}.subDetail[{k}]")


def _line_money(line: Mapping[str, Any], path: str) -> Iterator[tuple[str, object]]:
    for key in ("unitPrice", "net"):
        if key in line:
            yield f"{path}.{key}", line[key]


class _Checker:
    """One pass over a Claim: amounts are validated first, arithmetic only in one currency."""

    def __init__(self, claim: Mapping[str, Any], base: str) -> None:
        self.claim = claim
        self.base = base
        self.problems: list[Problem] = []
        self.currency: str | None = None
        self.arithmetic = True  # False once an amount is unusable or in a second currency

    def amount(self, raw: object, path: str) -> Money | None:
        """Validate one Money; record why it cannot take part in arithmetic."""
        if not isinstance(raw, Mapping):
            self._bad("amount-invalid", path, f"{path} is not a FHIR Money object")
            return None
        value = to_decimal(raw.get("value"))
        currency = raw.get("currency")
        if value is None:
            self._bad("amount-invalid", f"{path}.value", f"{path}.value is not a number")
            return None
        if not isinstance(currency, str):
            self._bad("currency-missing", f"{path}.currency", f"{path} has no currency")
            return None
        if not _CURRENCY.fullmatch(currency):
            self._bad("currency-invalid", f"{path}.currency", f"{path}: bad currency code")
            return None
        if self._out_of_range(value, f"{path}.value"):
            return None
        money = Money(value, currency)
        if value < 0:
            self.problems.append(
                Problem(
                    "negative-amount", f"{path}.value", f"{path} is negative ({money})", None, money
                )
            )
        if self.currency is None:
            self.currency = currency
        elif currency != self.currency:
            self._bad(
                "currency-mismatch",
                f"{path}.currency",
                f"{path} is in {currency} but the claim is in {self.currency}",
            )
            return None
        return money

    def number(self, raw: object, path: str) -> Decimal | None:
        """A quantity value or factor (dimensionless); ``None`` when absent."""
        if raw is None:
            return None
        value = to_decimal(raw)
        if value is None:
            self._bad("amount-invalid", path, f"{path} is not a number")
            return None
        if self._out_of_range(value, path):
            return None
        if value < 0:
            self.problems.append(Problem("negative-amount", path, f"{path} is negative ({value})"))
        return value

    def _out_of_range(self, value: Decimal, path: str) -> bool:
        if abs(value) >= MAX_ABS_AMOUNT or len(value.as_tuple().digits) > _MAX_DIGITS:
            self._bad("amount-out-of-range", path, f"{path} is out of range")
            return True
        return False

    def _bad(self, code: str, path: str, message: str) -> None:
        self.problems.append(Problem(code, path, message))
        self.arithmetic = False

    def line(self, line: Mapping[str, Any], path: str, children: str | None) -> Money | None:
        """Check one item/detail/subDetail; return its effective net (or ``None``)."""
        unit_price = (
            self.amount(line["unitPrice"], f"{path}.unitPrice") if "unitPrice" in line else None
        )
        net = self.amount(line["net"], f"{path}.net") if "net" in line else None
        quantity_obj = line.get("quantity")
        quantity = (
            self.number(quantity_obj.get("value"), f"{path}.quantity.value")
            if isinstance(quantity_obj, Mapping)
            else None
        )
        factor = self.number(line.get("factor"), f"{path}.factor")

        computed: Money | None = None
        if unit_price is not None:
            product = unit_price.value * (quantity if quantity is not None else 1)
            product *= factor if factor is not None else 1
            computed = Money(round_money(product, unit_price.currency), unit_price.currency)
            if net is not None and net.value != computed.value:
                self._mismatch(
                    "net-mismatch",
                    f"{path}.net",
                    f"{path}.net is {net} but quantity x unitPrice x factor = {computed}",
                    computed,
                    net,
                )

        total: Money | None = None
        if children is not None:
            parts = [
                self.line(
                    child, f"{path}.{children}[{i}]", "subDetail" if children == "detail" else None
                )
                for i, child in enumerate(_list(line, children))
                if isinstance(child, Mapping)
            ]
            amounts = [p for p in parts if p is not None]
            if amounts:
                total = Money(sum((a.value for a in amounts), Decimal(0)), amounts[0].currency)
                if net is not None and net.value != total.value:
                    self._mismatch(
                        "detail-sum-mismatch",
                        f"{path}.net",
                        f"{path}.net is {net} but its {children} nets add up to {total}",
                        total,
                        net,
                    )
        return net or computed or total

    def _mismatch(self, code: str, path: str, message: str, expected: Money, actual: Money) -> None:
        if self.arithmetic:
            self.problems.append(Problem(code, path, message, expected, actual))

    def run(self) -> list[Problem]:
        nets = [
            self.line(item, f"{self.base}.item[{i}]", "detail")
            for i, item in enumerate(_list(self.claim, "item"))
            if isinstance(item, Mapping)
        ]
        if "total" in self.claim:
            total = self.amount(self.claim["total"], f"{self.base}.total")
            if total is not None:
                expected = Money(
                    sum((n.value for n in nets if n is not None), Decimal(0)), total.currency
                )
                if expected.value != total.value:
                    self._mismatch(
                        "total-mismatch",
                        f"{self.base}.total",
                        f"{self.base}.total is {total} but the item nets add up to {expected}",
                        expected,
                        total,
                    )
        if not self.arithmetic:  # sums over unusable or mixed amounts mean nothing
            self.problems = [
                p for p in self.problems if "mismatch" not in p.code or p.expected is None
            ]
        return self.problems


def check_totals(claim: object, base: str = "Claim") -> list[Problem]:
    """Every way the amounts of a Claim (JSON dict, ideally from :func:`loads`) fail to add up.

    Checks each item, detail and subDetail (``net = quantity x unitPrice x factor`` rounded
    half-up to the minor unit; ``net`` = sum of the children's nets), ``total`` = sum of the item
    nets, one currency, no negative amount. ``base`` prefixes the FHIRPath expressions
    (``Bundle.entry[0].resource`` inside a Bundle). An empty list means the amounts add up.
    Never raises: unusable amounts are reported, and then no sum is compared.
    """
    if not isinstance(claim, Mapping):
        return [Problem("amount-invalid", base, f"{base} is not a JSON object")]
    checker = _Checker(claim, base)
    try:
        with localcontext(prec=80):
            return checker.run()
    except (ArithmeticError, InvalidOperation) as exc:  # pragma: no cover - bounded inputs
        return [*checker.problems, Problem("amount-invalid", base, f"arithmetic failed: {exc}")]
