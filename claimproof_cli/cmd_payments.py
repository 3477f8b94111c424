"""``claimproof payments list | show``: what the insurer's payment runs paid you.

``list`` prints your remittances, newest first (``GET /api/v1/payments/reconciliations``);
``show RUN_ID`` one run's FHIR R4 PaymentReconciliation for you: a summary with one line per
payout, or the resource itself, amounts exactly as sent, with ``--json``.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

from claimproof_cli import OK, CliError, usage
from claimproof_cli.cmd_claim import pretty_exact
from claimproof_cli.context import Context

PATH = "/api/v1/payments/reconciliations"


def _positive(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise usage(f"{name} must be at least 1, not {value}")
    return value


def _describe_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no payment to you yet"
    lines = [f"{'RUN':>5}  {'PERIOD':10}  {'PAYOUTS':>7}  {'AMOUNT':>14}  OUTCOME"]
    for r in rows:
        amount = f"{r['amount']} {r['currency']}"
        outcome = r["outcome"]
        if r.get("unsettled"):
            outcome += f" ({r['unsettled']} not paid)"
        lines.append(f"{r['run']:>5}  {r['period']:10}  {r['payouts']:>7}  {amount:>14}  {outcome}")
    return "\n".join(lines)


def list_(ctx: Context) -> int:
    rows = ctx.client.get_json(
        PATH,
        limit=_positive(ctx.args.limit, "--limit"),
        before=_positive(ctx.args.before, "--before"),
    )
    ctx.emit(rows, _describe_list(rows))
    return OK


def _describe(resource: dict[str, Any], run_id: int) -> str:
    amount = resource.get("paymentAmount") or {}
    details = resource.get("detail") or []
    lines = [
        f"payment run {run_id} for {resource.get('period', {}).get('end', '?')}, "
        f"paid {resource.get('paymentDate', '?')}: {amount.get('value')} "
        f"{amount.get('currency', '')} in {len(details)} payout{'s' * (len(details) != 1)} "
        f"({resource.get('outcome', '?')})",
    ]
    if resource.get("disposition"):
        lines.append(resource["disposition"])
    for d in details:
        money = d.get("amount") or {}
        lines.append(
            f"  {d.get('identifier', {}).get('value', '?')}  "
            f"{d.get('request', {}).get('reference', '?')}  "
            f"{money.get('value')} {money.get('currency', '')}  {d.get('date', '')}"
        )
    return "\n".join(lines)


def show(ctx: Context) -> int:
    run_id = _positive(ctx.args.run_id, "RUN_ID")
    answer = ctx.client.get(f"{PATH}/{run_id}", currency=ctx.args.currency or None)
    if ctx.json:
        sys.stdout.write(pretty_exact(answer.body) + "\n")
        return OK
    try:  # exact decimals for people too: 210.00 stays 210.00
        resource = json.loads(answer.body, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"the server's answer is not JSON: {exc}") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != "PaymentReconciliation":
        raise CliError("the server's answer is not a FHIR PaymentReconciliation")
    print(_describe(resource, run_id))
    return OK
