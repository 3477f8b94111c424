"""Coded reasons for adjusters' decisions.

Denials and item adjustments use X12 Claim Adjustment Reason Codes (CARC), the codes US payers
send in remittance advice; requests for information use a short local list. A decision always
carries a code, and a denial also needs a sentence for the provider.
"""

from __future__ import annotations

CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"

DENIAL_REASONS: dict[str, str] = {
    "4": "The procedure code is inconsistent with the modifier used",
    "11": "The diagnosis is inconsistent with the procedure",
    "16": "Claim lacks information needed for adjudication",
    "18": "Exact duplicate claim or service",
    "22": "Care may be covered by another payer (coordination of benefits)",
    "27": "Expenses incurred after coverage terminated",
    "29": "The time limit for filing has expired",
    "45": "Charge exceeds fee schedule or maximum allowable amount",
    "50": "Not deemed a medical necessity by the payer",
    "96": "Non-covered charge",
    "97": "Payment included in the allowance for another service",
    "197": "Precertification or authorization absent",
}

# Adjusting an item down to an allowed amount uses the same codes; 45 is the usual one.
ADJUSTMENT_REASONS = DENIAL_REASONS

INFO_REASONS: dict[str, str] = {
    "records": "Medical records for the billed procedures",
    "operative-report": "Operative or procedure report",
    "authorization": "Proof of prior authorization",
    "itemization": "Itemized bill",
    "other": "Other (see the question)",
}


def reason_label(code: str) -> str:
    return DENIAL_REASONS.get(code) or INFO_REASONS.get(code) or code
