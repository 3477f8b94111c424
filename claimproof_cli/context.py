"""What every command needs: the parsed options, the server, the store, and how to answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from claimproof_cli import usage
from claimproof_cli.http import Client
from claimproof_cli.store import Store


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._client: Client | None = None
        self._store: Store | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client.make(
                self.args.url or os.environ.get("CLAIMPROOF_URL"),
                self.args.token or os.environ.get("CLAIMPROOF_TOKEN"),
                self.args.http_timeout,
            )
        return self._client

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.args.store)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def emit(self, data: Any, human: str) -> None:
        """``data`` as one JSON document with ``--json``; ``human`` otherwise."""
        if self.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        elif human:
            print(human)

    def warn(self, message: str) -> None:
        print(f"claimproof: {message}", file=sys.stderr)


def read_bytes(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise usage(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise usage(f"{what} {str(path)!r} is a directory, not a file") from None
    except OSError as exc:
        raise usage(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None


def read_json(path: str | Path, what: str) -> Any:
    raw = read_bytes(path, what)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise usage(f"{what} {str(path)!r} is not JSON: {exc}") from None


def read_resource(path: str | Path, resource_type: str) -> dict[str, Any]:
    """A FHIR resource of ``resource_type`` from a JSON file (usage error otherwise)."""
    value = read_json(path, f"the {resource_type} file")
    if not isinstance(value, dict) or value.get("resourceType") != resource_type:
        found = value.get("resourceType") if isinstance(value, dict) else type(value).__name__
        raise usage(f"{str(path)!r} is not a FHIR {resource_type} (its resourceType is {found!r})")
    return value
