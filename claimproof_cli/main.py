"""``claimproof``: the provider's command line. ``claimproof --help`` lists the commands.

Exit codes: 0 ok, 1 refused by the server or verification failed, 2 usage error (bad option,
unreadable or malformed file, nothing in the store), 3 cannot reach the server (or it failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from claimproof_cli import (
    CliError,
    cmd_anchor,
    cmd_claim,
    cmd_info,
    cmd_key,
    cmd_payments,
    cmd_verify,
)
from claimproof_cli.context import Context
from claimproof_cli.http import DEFAULT_TIMEOUT_S

Command = Callable[[Context], int]


def _common(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand (``claimproof --json claim status``
    and ``claimproof claim status --json``); the subcommand's copy never overrides."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=d(None), help="the node (default: $CLAIMPROOF_URL)")
    p.add_argument("--token", default=d(None), help="API token (default: $CLAIMPROOF_TOKEN)")
    p.add_argument(
        "--store",
        default=d(None),
        help="the local store (default: $CLAIMPROOF_STORE or ~/.claimproof/store.sqlite3)",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=d(DEFAULT_TIMEOUT_S),
        metavar="S",
        help="seconds to wait for each HTTP answer",
    )
    p.add_argument("--json", action="store_true", default=d(False), help="JSON output")
    return p


def _add(sub, name: str, func: Command, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, parents=[_common(False)], help=help, description=help)
    parser.set_defaults(func=func)
    return parser


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE", help="signed checkpoint (default: fetch it)")
    p.add_argument("--proof", metavar="FILE", help="inclusion proof JSON (default: fetch it)")
    p.add_argument("--log-key", required=True, metavar="VKEY", help="log verifier key or file")
    p.add_argument(
        "--witness-key", action="append", metavar="VKEY", help="witness verifier key or file"
    )
    p.add_argument("--quorum", type=int, required=True, metavar="K", help="cosignatures needed")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="claimproof",
        parents=[_common(True)],
        description="ClaimProof provider client: keys, anchors, claims, offline proofs.",
        epilog="Exit codes: 0 ok, 1 refused or not verified, 2 usage, 3 server unreachable.",
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="COMMAND")

    key = groups.add_parser("key", help="the claim-signing key").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    _add(key, "generate", cmd_key.generate, "generate an Ed25519 signing key into the store")
    p = _add(key, "register", cmd_key.register, "register the public JWK with the node")
    p.add_argument("--provider-id", type=int, required=True, metavar="N")
    p.add_argument("--kid", help="which key (default: the newest)")
    p = _add(key, "show", cmd_key.show, "print the public JWK")
    p.add_argument("--kid", help="which key (default: the newest)")

    p = _add(groups, "anchor", cmd_anchor.run, "anchor FHIR Procedures on the ledger")
    p.add_argument("files", nargs="+", metavar="PROCEDURE.json|DIR")
    p.add_argument("--member-key", metavar="FILE", help="member anchor signer key (remembered)")
    p.add_argument("--batch", action="store_true", help="send all in one NDJSON request")

    claim = groups.add_parser("claim", help="build, submit and follow claims").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = _add(claim, "build", cmd_claim.build, "build and sign a claim Bundle")
    p.add_argument("claim", metavar="CLAIM.json")
    p.add_argument("--procedure", nargs="+", required=True, metavar="ID")
    p.add_argument("--context", nargs="+", metavar="FILE", help="Coverage, Patient, ... to add")
    p.add_argument("--who", help="signer reference (default: Claim.provider.reference)")
    p.add_argument("--kid", help="signing key (default: the newest)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p = _add(claim, "submit", cmd_claim.submit, "submit a signed claim Bundle")
    p.add_argument("bundle", metavar="BUNDLE.json")
    p.add_argument("--idempotency-key", metavar="K", help="default: generated and remembered")
    for name, func, text in (
        ("status", cmd_claim.status, "status, verdict and checks of a claim"),
        ("response", cmd_claim.response, "the ClaimResponse (FHIR JSON)"),
    ):
        _add(claim, name, func, text).add_argument("id", metavar="ID")
    p = _add(claim, "info", cmd_info.info, "the insurer's requests for information")
    p.add_argument("id", metavar="ID")
    p = _add(claim, "answer", cmd_info.answer, "answer the open request for information")
    p.add_argument("id", metavar="ID")
    p.add_argument("--resource", metavar="FILE.json", help="a FHIR DocumentReference or Binary")
    p.add_argument("--file", metavar="DOCUMENT", help="any file, sent in a DocumentReference")
    p.add_argument("--content-type", metavar="TYPE", help="of --file (default: from its name)")
    p.add_argument("--title", help="of --file (default: its name)")
    p.add_argument("--text", help="a sentence for the adjuster")
    p = _add(claim, "wait", cmd_claim.wait, "poll until the claim is no longer being verified")
    p.add_argument("id", metavar="ID")
    p.add_argument("--timeout", dest="wait_timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--interval", type=float, default=2.0, metavar="S")

    payments = groups.add_parser(
        "payments", help="what the insurer's payment runs paid you"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(payments, "list", cmd_payments.list_, "your remittances, newest first")
    p.add_argument("--limit", type=int, metavar="N", help="at most N runs (1 to 100; 100)")
    p.add_argument("--before", type=int, metavar="RUN_ID", help="runs older than RUN_ID")
    p = _add(payments, "show", cmd_payments.show, "a run's FHIR PaymentReconciliation for you")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--currency", metavar="CODE", help="when the run paid you in several")

    verify = groups.add_parser("verify", help="offline proofs of inclusion").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = _add(verify, "leaf", cmd_verify.leaf, "prove a leaf is in the log")
    p.add_argument("index", type=int, metavar="INDEX")
    p.add_argument("--leaf-hash", help="the leaf hash expected (base64)")
    _verify_options(p)
    p = _add(verify, "procedure", cmd_verify.procedure, "prove a stored procedure is in the log")
    p.add_argument("id", metavar="ID")
    _verify_options(p)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ctx = Context(args)
    try:
        return args.func(ctx)
    except CliError as exc:
        print(f"claimproof: error: {exc.message}", file=sys.stderr)
        if ctx.json:
            error = {"message": exc.message, "exit_code": exc.exit_code, **exc.details}
            print(json.dumps({"error": error}, indent=2))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
