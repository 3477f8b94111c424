"""The checks a verification run makes, each a small function over one :class:`Context`.

Checks only read (the double-billing reservation, the one check that writes, lives in
``claims/checks/billing.py`` and runs inside the verification's transaction). Each returns
:class:`Result` rows: a name, an outcome, a sentence for people and the evidence as JSON.
``claims/verification.py`` runs them in order, records them and moves the claim;
docs/verification.md describes every check.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claims.checks.ledger import Judged, LeafRow
    from claims.disclosure import Disclosed
    from claims.fhir_validation import ValidatedBundle
    from claims.models import Claim

PASS, FAIL, WARN, WAIT = "pass", "fail", "warn", "wait"  # ClaimCheck.Outcome values


@dataclass
class Result:
    name: str
    outcome: str
    sentence: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prefetched:
    """What a batch of verifications reads once for all its claims (``claim_verify_many``):
    each check uses it instead of its own query when the context carries one."""

    keys: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # kid -> key values
    leaves: dict[int | bytes, LeafRow] = field(default_factory=dict)  # by index and commitment
    head: Judged | None = None  # the newest checkpoint
    target: Judged | None = None  # the checkpoint proofs go to
    paths: dict[int, list[bytes] | str] = field(default_factory=dict)  # leaf index -> proof
    fees: dict[tuple[str, str, str], Any] = field(default_factory=dict)  # -> max_unit_price


@dataclass
class Context:
    """What the checks share: the claim, its Bundle parsed twice (floats for the commitments,
    exact Decimals for FHIR and money), and what earlier checks learnt."""

    claim: Claim
    bundle: dict[str, Any] | None = None  # json.loads(body): what the commitments are over
    validated: ValidatedBundle | None = None  # from money.loads(body): exact amounts
    disclosed: list[Disclosed] = field(default_factory=list)
    leaves: dict[str, LeafRow] = field(default_factory=dict)  # fullUrl -> its leaf, when found
    item_procedures: dict[int, tuple[str, ...]] = field(default_factory=dict)  # seq -> fullUrls
    # fullUrl -> why the Procedure cannot be paid (an item adjudication reason code)
    procedure_failures: dict[str, str] = field(default_factory=dict)
    prefetched: Prefetched | None = None  # a batch's shared reads (None: each check queries)
    reservation: Result | None = None  # the batch already reserved the billed anchors

    def fail_procedure(self, full_url: str, code: str) -> None:
        self.procedure_failures.setdefault(full_url, code)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def short(value: str, size: int = 12) -> str:
    """The start of a long identifier, for sentences (the evidence keeps it whole)."""
    return value if len(value) <= size else value[:size] + "…"
