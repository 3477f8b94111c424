"""The provider's command-line client (``claimproof``): keys, anchors, claims, offline proofs.

It runs on the provider's machine and talks to a ClaimProof node over its REST API. It imports
the project's pure modules (``ledger.anchor``, ``ledger.note``, ``ledger.merkle``,
``ledger.checkpoint``, ``claims.jws``, ``claims.disclosure``) and never Django. See docs/cli.md.
"""

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CliError(Exception):
    """A failure the user can act on: a sentence and the process exit code."""

    def __init__(self, message: str, exit_code: int = REFUSED, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details


def usage(message: str) -> CliError:
    return CliError(message, USAGE)
