"""Structural validation of a submitted claim Bundle with the ``fhir.resources`` R4B models.

Pure Python (no Django): :func:`validate_bundle` either returns a :class:`ValidatedBundle` (typed
models plus the accessors the verifier needs) or raises :class:`FhirInvalid` carrying a FHIR R4
``OperationOutcome`` whose issues name each bad element by FHIRPath. It never raises anything else.

Why it is built this way (see docs/fhir-validation.md):

* R4B models, not the package's top-level R5 ones, which reject most official R4 examples.
* The Bundle is never validated as a whole: an unknown ``resourceType`` in an entry makes
  ``fhir.resources`` raise a bare ``KeyError``, and validating every entry would also pay for
  resources we refuse anyway. We check the envelope and the entry shape ourselves, then construct
  each accepted resource's model exactly once.
* ``fhir.resources`` does not check code values (``status: "bogus"`` passes), so the codes we act
  on are checked here.
* Amounts are read from the JSON as received (see :mod:`claims.money`), never from the models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

from claims.money import Money, iter_money, money_from_json, to_decimal

__all__ = [
    "ACCEPTED_RESOURCES",
    "CLAIM_STATUS",
    "CLAIM_USE",
    "MAX_ENTRIES",
    "MAX_ISSUES",
    "PROCEDURE_STATUS",
    "RULES_VERSION",
    "ClaimItem",
    "ClaimProcedure",
    "Coding",
    "FhirInvalid",
    "Insurance",
    "ProcedureView",
    "Ref",
    "RelatedClaim",
    "ValidatedBundle",
    "operation_outcome",
    "trusting_intake",
    "validate_bundle",
]

# The rules validate_bundle applies. Intake records it with each claim (Claim.fhir_rules): a
# claim's first verification trusts intake's validation under the same rules. Raise it with any
# change that could refuse a Bundle accepted before (models, codes, shape, money rules).
RULES_VERSION = 1

# Required code bindings of R4 that fhir.resources leaves unchecked and that we act on.
CLAIM_STATUS = frozenset({"active", "cancelled", "draft", "entered-in-error"})
CLAIM_USE = frozenset({"claim", "preauthorization", "predetermination"})
PROCEDURE_STATUS = frozenset(
    {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    }
)
ACCEPTED_RESOURCES: dict[str, type[Resource]] = {
    "Claim": Claim,
    "Procedure": Procedure,
    "Coverage": Coverage,
    "Patient": Patient,
    "Organization": Organization,
    "Practitioner": Practitioner,
}
_CODES: dict[type[Resource], tuple[tuple[str, frozenset[str]], ...]] = {
    Claim: (("status", CLAIM_STATUS), ("use", CLAIM_USE)),
    Procedure: (("status", PROCEDURE_STATUS),),
}
MAX_ISSUES = 100  # an OperationOutcome for garbage input stays small
MAX_ENTRIES = 500  # each resource model costs ~0.2-1 ms: bound the CPU one request can take
_SNIPPET = 60  # characters of an offending value or key quoted back
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_REQUIRED = {"missing", "model_field_validation.missing"}
_STRUCTURE = {"model_type", "model_attributes_type", "model_validation_format"}


class FhirInvalid(ValueError):
    """The submission is not a Bundle we accept; ``outcome`` is the OperationOutcome to return."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        self.outcome = outcome
        issues = outcome.get("issue") or [{}]
        super().__init__(issues[0].get("diagnostics", "invalid FHIR"))


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap issues in an R4 ``OperationOutcome`` (capped at :data:`MAX_ISSUES`)."""
    if len(issues) > MAX_ISSUES:
        dropped = len(issues) - MAX_ISSUES + 1
        issues = [*issues[: MAX_ISSUES - 1], _issue("too-costly", "Bundle", f"{dropped} more")]
    return {"resourceType": "OperationOutcome", "issue": issues}


def _issue(code: str, expression: str, diagnostics: str) -> dict[str, Any]:
    return {
        "severity": "error",
        "code": code,
        "diagnostics": diagnostics,
        "expression": [expression],
    }


def _snip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _segment(name: str) -> str:
    """A FHIRPath identifier; odd keys are backtick-delimited and truncated."""
    if _IDENT.fullmatch(name) and len(name) <= 64:
        return name
    return "`" + name[:40].replace("`", "'") + ("...`" if len(name) > 40 else "`")


def _fhirpath(base: str, loc: tuple[int | str, ...], extra: bool) -> str:
    """Turn a pydantic ``loc`` into FHIRPath: ``_status`` -> ``status``, drop model internals."""
    parts = [base]
    last = len(loc) - 1
    for n, seg in enumerate(loc):
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif n == last and extra:  # the offending key itself: keep it, whatever it is
            parts.append("." + _segment(seg))
        elif seg == "resource_type":
            parts.append(".resourceType")
        elif seg == "root" or not _IDENT.fullmatch(seg):
            continue  # pydantic's own wrappers (RootModel, unions, validators)
        else:
            parts.append("." + _segment(seg.removeprefix("_")))
    return "".join(parts)


def _pydantic_issues(exc: ValidationError, base: str) -> list[dict[str, Any]]:
    issues = []
    for err in exc.errors(include_url=False, include_context=False):
        kind = err.get("type", "")
        extra = kind == "extra_forbidden"
        path = _fhirpath(base, tuple(err.get("loc", ())), extra)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        msg = " ".join(msg.split())
        if extra:
            code, msg = "structure", "Unknown element (not in FHIR R4)"
        elif kind in _REQUIRED:
            code, msg = "required", "Required element is missing"
        elif kind == "json_invalid":  # fhir.resources parses strings given for objects
            code, msg = "structure", "Expected a JSON object"
        elif kind in _STRUCTURE or kind.endswith("_type") or "wrong-resource-type" in kind:
            code = "structure"
        elif kind == "string_too_long":
            code = "too-long"
        else:
            code = "value"
        inp = err.get("input")
        if len(msg) > 200:
            msg = msg[:197] + "..."
        if not extra and isinstance(inp, str | int | float | Decimal):
            msg = f"{msg} (got {_snip(inp)})"
        issues.append(_issue(code, path, f"{path}: {msg}"))
    return issues


_JSON_WS = " \t\n\r"
_OPENERS = frozenset("{ \t\n\r")


def _has_object_string(root: object) -> bool:
    """Cheap pre-filter (~40 us a Claim): is there any string value that opens a JSON object?"""
    stack = [root]
    while stack:
        node = stack.pop()
        values = node.values() if type(node) is dict or isinstance(node, Mapping) else node
        for value in values:  # type: ignore[attr-defined]
            kind = type(value)
            if kind is dict or kind is list:  # exact types first: isinstance on ABCs is slow
                stack.append(value)
            elif kind is str:
                if value[:1] in _OPENERS and value.lstrip(_JSON_WS)[:1] == "{":
                    return True
            elif isinstance(value, Mapping | list):
                stack.append(value)
            elif isinstance(value, str) and value.lstrip(_JSON_WS)[:1] == "{":
                return True
    return False


@lru_cache(maxsize=1024)
def _field_names(cls: type[BaseModel]) -> dict[str, str]:
    """JSON name -> attribute name (``class`` -> ``class_fhir``, ``_status`` -> ``status__ext``)."""
    return {(f.alias or name): name for name, f in cls.model_fields.items()}


def _string_encoded_issues(
    raw: Mapping[str, Any], model: BaseModel, base: str
) -> list[dict[str, Any]]:
    """Complex elements sent as JSON *strings*, which fhir.resources silently parses.

    ``"unitPrice": "{\"value\": 1e3, ...}"`` validates, yet it is not FHIR JSON and every reader
    of the raw JSON (amounts, signatures, accessors) would miss what the model sees.
    """
    issues = []
    stack: list[tuple[object, object, str]] = [(raw, model, base)]
    while stack:
        node, mnode, path = stack.pop()
        if isinstance(node, Mapping) and isinstance(mnode, BaseModel):
            names = _field_names(type(mnode))
            for key, value in node.items():
                name = names.get(key)
                if name is None or isinstance(value, int | float | Decimal | bool):
                    continue
                child = getattr(mnode, name, None)
                if isinstance(value, str):
                    if isinstance(child, BaseModel):
                        where = f"{path}.{_segment(key.removeprefix('_'))}"
                        issues.append(
                            _issue("structure", where, f"{where}: a JSON object, not a string")
                        )
                else:
                    stack.append((value, child, f"{path}.{_segment(key.removeprefix('_'))}"))
        elif isinstance(node, list) and isinstance(mnode, list):
            for i, (value, child) in enumerate(zip(node, mnode, strict=False)):
                if isinstance(value, str):
                    if isinstance(child, BaseModel):
                        where = f"{path}[{i}]"
                        issues.append(
                            _issue("structure", where, f"{where}: a JSON object, not a string")
                        )
                elif isinstance(value, Mapping | list):
                    stack.append((value, child, f"{path}[{i}]"))
    return issues


@lru_cache(maxsize=512)
def _is_resource_type(name: str) -> bool:
    if not _TYPE_NAME.fullmatch(name):
        return False
    try:
        cls = get_fhir_model_class(name)
    except Exception:  # any lookup failure means "not a resource type"
        return False
    return isinstance(cls, type) and issubclass(cls, Resource)


def _contained_issues(resource: Mapping[str, Any], base: str) -> list[dict[str, Any]]:
    """Unknown contained types, which make fhir.resources raise a bare KeyError."""
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return []
    issues = []
    for i, res in enumerate(contained):
        rtype = res.get("resourceType") if isinstance(res, Mapping) else None
        if isinstance(rtype, str) and not _is_resource_type(rtype):
            path = f"{base}.contained[{i}].resourceType"
            issues.append(_issue("not-supported", path, f"{path}: unknown {_snip(rtype)}"))
    return issues


def _code_issue(
    obj: Mapping[str, Any], key: str, allowed: frozenset[str], base: str
) -> dict[str, Any] | None:
    value = obj.get(key)
    if isinstance(value, str) and value not in allowed:
        path = f"{base}.{key}"
        return _issue(
            "code-invalid",
            path,
            f"{path}: {_snip(value)} is not one of {', '.join(sorted(allowed))}",
        )
    return None


def _money_issues(claim: Mapping[str, Any], base: str) -> list[dict[str, Any]]:
    """Every amount must carry a numeric value and an ISO 4217 currency (we pay in it)."""
    issues = []
    for path, raw in iter_money(claim, base):
        if isinstance(raw, Mapping) and money_from_json(raw) is None:
            issues.append(
                _issue("required", path, f"{path}: an amount needs a value and a currency code")
            )
    return issues


# ---------------------------------------------------------------------------------------------
# Typed views


@dataclass(frozen=True, slots=True)
class Coding:
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class Ref:
    """A FHIR Reference: literal ``reference`` and/or a logical ``identifier`` (system, value)."""

    reference: str | None
    identifier: tuple[str | None, str | None] | None = None


@dataclass(frozen=True, slots=True)
class Insurance:
    sequence: int
    focal: bool
    coverage: Ref | None


@dataclass(frozen=True, slots=True)
class RelatedClaim:
    """``Claim.related``: the original a correction or void points to."""

    claim: Ref | None
    relationship: str | None  # first coding's code, e.g. "prior", "associated"
    reference: tuple[str | None, str | None] | None  # Identifier (system, value)


@dataclass(frozen=True, slots=True)
class ClaimProcedure:
    """``Claim.procedure``: ``sequence`` is what ``item.procedureSequence`` points at."""

    sequence: int
    reference: Ref | None  # procedureReference (to a disclosed Procedure)
    codes: tuple[Coding, ...]  # procedureCodeableConcept
    date: str | None


@dataclass(frozen=True, slots=True)
class ClaimItem:
    """One ``Claim.item``; amounts exact from the JSON, dates as sent (FHIR lexical form)."""

    index: int
    sequence: int
    codes: tuple[Coding, ...]  # productOrService.coding
    serviced_date: str | None
    serviced_period: tuple[str | None, str | None] | None
    quantity: Decimal | None
    unit_price: Money | None
    factor: Decimal | None
    net: Money | None
    procedure_sequence: tuple[int, ...]

    @property
    def code(self) -> str | None:
        """The first productOrService code."""
        return self.codes[0].code if self.codes else None


@dataclass(frozen=True, slots=True)
class ProcedureView:
    """A disclosed Procedure with the model, the JSON as sent and its place in the Bundle."""

    index: int  # entry index
    full_url: str | None
    model: Procedure
    json: Mapping[str, Any]

    @property
    def id(self) -> str | None:
        return self.model.id

    @property
    def status(self) -> str:
        return self.model.status

    @property
    def subject(self) -> Ref | None:
        return _ref(self.json.get("subject"))

    @property
    def performed(self) -> tuple[str | None, str | None] | None:
        """performedDateTime as (t, t) or performedPeriod as (start, end); None otherwise."""
        if isinstance(t := self.json.get("performedDateTime"), str):
            return (t, t)
        if isinstance(p := self.json.get("performedPeriod"), Mapping):
            return (p.get("start"), p.get("end"))
        return None

    @property
    def codes(self) -> tuple[Coding, ...]:
        return _codings(self.json.get("code"))


def _codings(concept: object) -> tuple[Coding, ...]:
    if not isinstance(concept, Mapping):
        return ()
    return tuple(
        Coding(c.get("system"), c.get("code"))
        for c in concept.get("coding") or ()
        if isinstance(c, Mapping)
    )


def _identifier(obj: object) -> tuple[str | None, str | None] | None:
    return (obj.get("system"), obj.get("value")) if isinstance(obj, Mapping) else None


def _ref(obj: object) -> Ref | None:
    if not isinstance(obj, Mapping):
        return None
    return Ref(obj.get("reference"), _identifier(obj.get("identifier")))


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class ValidatedBundle:
    """A Bundle that passed :func:`validate_bundle`. ``json`` is the Bundle exactly as given."""

    json: Mapping[str, Any]
    claim: Claim
    claim_index: int
    procedures: tuple[ProcedureView, ...]
    others: dict[int, Resource] = field(default_factory=dict)  # Coverage, Patient... by entry
    # Not validated here: the views of a Bundle intake validated under these rules (0: validated)
    intake_rules: int = 0

    @property
    def claim_json(self) -> Mapping[str, Any]:
        return self.json["entry"][self.claim_index]["resource"]

    @property
    def claim_expression(self) -> str:
        """FHIRPath of the Claim, the ``base`` to give :func:`claims.money.check_totals`."""
        return f"Bundle.entry[{self.claim_index}].resource"

    @property
    def use(self) -> str:
        return self.claim.use

    @property
    def status(self) -> str:
        return self.claim.status

    @property
    def created(self) -> str:
        return self.claim_json["created"]

    @property
    def reference(self) -> str:
        """The provider's own identifier of the claim (``Claim.identifier[0].value``), if any."""
        identifiers = self.claim_json.get("identifier") or []
        first = identifiers[0] if identifiers and isinstance(identifiers[0], dict) else {}
        value = first.get("value")
        return value[:100] if isinstance(value, str) else ""

    @property
    def patient(self) -> Ref | None:
        return _ref(self.claim_json.get("patient"))

    @property
    def insurer(self) -> Ref | None:
        return _ref(self.claim_json.get("insurer"))

    @property
    def provider(self) -> Ref | None:
        return _ref(self.claim_json.get("provider"))

    @property
    def insurance(self) -> tuple[Insurance, ...]:
        return tuple(
            Insurance(ins.sequence, bool(ins.focal), _ref(raw.get("coverage")))
            for ins, raw in zip(
                self.claim.insurance or (), _list(self.claim_json, "insurance"), strict=False
            )
        )

    @property
    def related(self) -> tuple[RelatedClaim, ...]:
        out = []
        for raw in _list(self.claim_json, "related"):
            codes = _codings(raw.get("relationship"))
            out.append(
                RelatedClaim(
                    _ref(raw.get("claim")),
                    codes[0].code if codes else None,
                    _identifier(raw.get("reference")),
                )
            )
        return tuple(out)

    @property
    def claim_procedures(self) -> tuple[ClaimProcedure, ...]:
        return tuple(
            ClaimProcedure(
                p.sequence,
                _ref(raw.get("procedureReference")),
                _codings(raw.get("procedureCodeableConcept")),
                raw.get("date"),
            )
            for p, raw in zip(
                self.claim.procedure or (), _list(self.claim_json, "procedure"), strict=False
            )
        )

    @cached_property  # read by several checks; the Bundle never changes
    def items(self) -> tuple[ClaimItem, ...]:
        out = []
        pairs = zip(self.claim.item or (), _list(self.claim_json, "item"), strict=False)
        for i, (item, raw) in enumerate(pairs):
            period = raw.get("servicedPeriod")
            quantity = raw.get("quantity")
            out.append(
                ClaimItem(
                    index=i,
                    sequence=item.sequence,
                    codes=_codings(raw.get("productOrService")),
                    serviced_date=raw.get("servicedDate"),
                    serviced_period=(period.get("start"), period.get("end"))
                    if isinstance(period, Mapping)
                    else None,
                    quantity=to_decimal(quantity.get("value"))
                    if isinstance(quantity, Mapping)
                    else None,
                    unit_price=money_from_json(raw.get("unitPrice")),
                    factor=to_decimal(raw.get("factor")),
                    net=money_from_json(raw.get("net")),
                    procedure_sequence=tuple(item.procedureSequence or ()),
                )
            )
        return tuple(out)

    @property
    def total(self) -> Money | None:
        return money_from_json(self.claim_json.get("total"))

    def resolve(self, reference: str | None) -> ProcedureView | None:
        """The disclosed Procedure a literal reference names (its fullUrl or ``Procedure/id``)."""
        if not reference:
            return None
        for proc in self.procedures:
            if reference == proc.full_url or (proc.id and reference == f"Procedure/{proc.id}"):
                return proc
        return None


# ---------------------------------------------------------------------------------------------
# Validation


def _validate_model(
    cls: type[Resource], resource: Mapping[str, Any], base: str
) -> tuple[Resource | None, list[dict[str, Any]]]:
    issues = _contained_issues(resource, base)
    if issues:  # would raise a bare KeyError inside fhir.resources
        return None, issues
    try:
        model = cls.model_validate(resource)
    except ValidationError as exc:
        return None, _pydantic_issues(exc, base)
    except RecursionError:
        return None, [_issue("too-costly", base, f"{base}: nested too deeply")]
    except Exception as exc:  # fhir.resources raises KeyError & co on odd input
        return None, [
            _issue("structure", base, f"{base}: not a valid resource ({type(exc).__name__})")
        ]
    if _has_object_string(resource):
        issues = _string_encoded_issues(resource, model, base)
        if issues:
            return None, issues
    return model, []


_TRUSTED: ContextVar[bool] = ContextVar("fhir_trusting_intake", default=False)


@contextmanager
def trusting_intake(rules: int) -> Iterator[bool]:
    """Inside, :func:`validate_bundle` trusts that intake validated the Bundle when intake did
    so under the current rules (``rules == RULES_VERSION``; the block gets True): it builds the
    same views without the R4B models (the costly part) and marks them ``intake_rules``. Only for
    the stored bytes of a claim intake accepted under ``rules``, never for input."""
    token = _TRUSTED.set(rules == RULES_VERSION)
    try:
        yield rules == RULES_VERSION
    finally:
        _TRUSTED.reset(token)


def validate_bundle(bundle: object) -> ValidatedBundle:
    """Validate a parsed claim Bundle (ideally parsed by :func:`claims.money.loads`).

    Raises :class:`FhirInvalid` with an OperationOutcome listing every problem found; never
    raises anything else, whatever the input.
    """
    if _TRUSTED.get():
        try:
            return _as_validated(bundle)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # not what intake accepted after all: validate it fully below
    try:
        return _validate(bundle)
    except FhirInvalid:
        raise
    except RecursionError:
        raise FhirInvalid(
            operation_outcome([_issue("too-costly", "Bundle", "Bundle: nested too deeply")])
        ) from None
    except Exception as exc:  # the contract is: an OperationOutcome, never a 500
        raise FhirInvalid(
            operation_outcome(
                [
                    _issue(
                        "exception", "Bundle", f"Bundle: cannot be validated ({type(exc).__name__})"
                    )
                ]
            )
        ) from None


def _fail(issues: list[dict[str, Any]]) -> FhirInvalid:
    return FhirInvalid(operation_outcome(issues))


def _validate(bundle: object) -> ValidatedBundle:
    if not isinstance(bundle, Mapping):
        raise _fail([_issue("structure", "Bundle", "Bundle: the body must be a JSON object")])
    rtype = bundle.get("resourceType")
    if rtype != "Bundle":
        raise _fail(
            [
                _issue(
                    "structure",
                    "Bundle.resourceType",
                    f"Bundle.resourceType must be 'Bundle', got {_snip(rtype)}",
                )
            ]
        )
    issues: list[dict[str, Any]] = []
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
        raise _fail(
            [_issue("too-costly", "Bundle.entry", f"Bundle.entry: more than {MAX_ENTRIES} entries")]
        )

    # 1. The envelope (type, identifier, timestamp, signature, entry.fullUrl...) without resources.
    envelope = dict(bundle)
    if isinstance(entries, list):
        envelope["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, Mapping) else e
            for e in entries
        ]
    try:
        envelope_model = Bundle.model_validate(envelope)
        if _has_object_string(envelope):
            issues += _string_encoded_issues(envelope, envelope_model, "Bundle")
    except ValidationError as exc:
        issues += _pydantic_issues(exc, "Bundle")
    btype = bundle.get("type")
    if isinstance(btype, str) and btype != "collection":
        issues.append(
            _issue(
                "code-invalid",
                "Bundle.type",
                f"Bundle.type must be 'collection', got {_snip(btype)}",
            )
        )
    if not isinstance(entries, list):
        if entries is None:
            issues.append(
                _issue(
                    "required",
                    "Bundle.entry",
                    "Bundle.entry: a Claim and its Procedures are required",
                )
            )
        raise _fail(issues)  # a non-list entry was reported by the envelope model

    # 2. Entry shape: accepted types only, one Claim, at least one Procedure, unique fullUrls.
    claims: list[int] = []
    procedures: list[int] = []
    seen_urls: dict[str, int] = {}
    seen_ids: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue  # reported by the envelope model
        base = f"Bundle.entry[{i}]"
        url = entry.get("fullUrl")
        if isinstance(url, str):
            if url in seen_urls:
                issues.append(
                    _issue(
                        "duplicate",
                        f"{base}.fullUrl",
                        f"{base}.fullUrl repeats entry[{seen_urls[url]}]",
                    )
                )
            seen_urls.setdefault(url, i)
        resource = entry.get("resource")
        if not isinstance(resource, Mapping):
            code = "required" if resource is None else "structure"
            issues.append(
                _issue(code, f"{base}.resource", f"{base}.resource must be a resource object")
            )
            continue
        rt = resource.get("resourceType")
        if rt not in ACCEPTED_RESOURCES:
            issues.append(
                _issue(
                    "not-supported",
                    f"{base}.resource.resourceType",
                    f"{base}.resource.resourceType {_snip(rt)} is not accepted here "
                    f"(only {', '.join(ACCEPTED_RESOURCES)})",
                )
            )
            continue
        rid = resource.get("id")
        if isinstance(rid, str):
            if (rt, rid) in seen_ids:
                issues.append(
                    _issue(
                        "duplicate",
                        f"{base}.resource.id",
                        f"{base}.resource.id: {rt}/{_snip(rid)} repeats entry[{seen_ids[rt, rid]}]",
                    )
                )
            seen_ids.setdefault((rt, rid), i)
        (claims if rt == "Claim" else procedures if rt == "Procedure" else []).append(i)
    if len(claims) != 1:
        where = "Bundle.entry" if not claims else f"Bundle.entry[{claims[1]}]"
        issues.append(
            _issue(
                "required" if not claims else "structure",
                where,
                f"Bundle.entry must hold exactly one Claim (found {len(claims)})",
            )
        )
    if not procedures:
        issues.append(
            _issue("required", "Bundle.entry", "Bundle.entry must hold at least one Procedure")
        )

    if issues:  # refuse a malformed Bundle before paying for the resource models
        raise _fail(issues)

    # 3. Each accepted resource, model constructed once; codes fhir.resources does not check.
    models: dict[int, Resource] = {}
    for i, entry in enumerate(entries):
        if len(issues) >= MAX_ISSUES:
            break
        if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
            continue
        resource = entry["resource"]
        cls = ACCEPTED_RESOURCES.get(resource.get("resourceType"))  # type: ignore[arg-type]
        if cls is None:
            continue
        base = f"Bundle.entry[{i}].resource"
        model, errors = _validate_model(cls, resource, base)
        issues += errors
        for key, allowed in _CODES.get(cls, ()):
            if issue := _code_issue(resource, key, allowed, base):
                issues.append(issue)
        if model is not None:
            models[i] = model
            if cls is Claim:  # types are sound now: only value and currency presence is left
                issues += _money_issues(resource, base)

    if issues:
        raise _fail(issues)
    claim_index = claims[0]
    return ValidatedBundle(
        json=bundle,
        claim=models[claim_index],  # type: ignore[arg-type]
        claim_index=claim_index,
        procedures=tuple(
            ProcedureView(i, entries[i].get("fullUrl"), models[i], entries[i]["resource"])  # type: ignore[arg-type]
            for i in procedures
        ),
        others={i: m for i, m in models.items() if i != claim_index and i not in procedures},
    )


# ---------------------------------------------------------------------------------------------
# A Bundle intake validated under the same rules


class _AsSent:
    """A resource's JSON read with the attribute names of its R4B model (``claim.item[0].sequence``,
    ``procedure.status``), all that the views read from the models. Integers the JSON wrote as
    ``1.0`` read as the ``int`` the model would hold."""

    __slots__ = ("_json",)

    def __init__(self, json: Mapping[str, Any]) -> None:
        self._json = json

    def __getattr__(self, name: str) -> Any:
        return _as_sent(self._json.get(name))


def _as_sent(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _AsSent(value)
    if isinstance(value, list):
        return [_as_sent(v) for v in value]
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def _as_validated(bundle: Any) -> ValidatedBundle:
    """The views :func:`_validate` returns, for a Bundle that passed it before: one Claim, its
    Procedures and the other accepted resources, by entry. Raises on anything else."""
    entries = bundle["entry"]
    claims, procedures, others = [], [], {}
    for i, entry in enumerate(entries):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        if rtype not in ACCEPTED_RESOURCES:
            raise ValueError(f"entry {i} holds a {rtype}")
        if rtype == "Claim":
            claims.append(i)
        elif rtype == "Procedure":
            procedures.append(i)
        else:
            others[i] = _AsSent(resource)
    if len(claims) != 1 or not procedures:
        raise ValueError("not one Claim and its Procedures")
    claim_index = claims[0]
    return ValidatedBundle(
        json=bundle,
        claim=_AsSent(entries[claim_index]["resource"]),  # type: ignore[arg-type]
        claim_index=claim_index,
        procedures=tuple(
            ProcedureView(
                i,
                entries[i].get("fullUrl"),
                _AsSent(entries[i]["resource"]),  # type: ignore[arg-type]
                entries[i]["resource"],
            )
            for i in procedures
        ),
        others=others,  # type: ignore[arg-type]
        intake_rules=RULES_VERSION,
    )
