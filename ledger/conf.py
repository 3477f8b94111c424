"""The consortium settings, with their defaults (config/settings.py sets them from the environment).

Read through these functions so that a node whose settings module predates a setting still runs.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ledger import note


def _get(name: str, default):
    return getattr(settings, name, default)


def witness_name() -> str:
    """The name this node cosigns under when it acts as a witness ("" = it is no witness)."""
    return _get("LEDGER_WITNESS_NAME", "")


def witness_logs() -> dict[str, list[str]]:
    """``{origin: [log verifier key, ...]}``: the logs this node's witness follows.

    ``LEDGER_WITNESS_LOGS`` maps each origin to one verifier key or a list of them.
    """
    raw = _get("LEDGER_WITNESS_LOGS", {}) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("LEDGER_WITNESS_LOGS is a JSON object {origin: verifier key}")
    logs: dict[str, list[str]] = {}
    for origin, value in raw.items():
        vkeys = [value] if isinstance(value, str) else list(value)
        for vkey in vkeys:
            try:
                note.parse_verifier_key(vkey)
            except note.NoteError as exc:
                raise ImproperlyConfigured(
                    f"LEDGER_WITNESS_LOGS[{origin!r}]: not a Go note verifier key: {exc}"
                ) from exc
        logs[origin] = vkeys
    return logs


def witness_max_body() -> int:
    """The largest add-checkpoint request body the witness reads, in bytes."""
    return int(_get("LEDGER_WITNESS_MAX_BODY", 65536))


def witness_timeout_s() -> float:
    """How long the operator waits for one add-checkpoint answer."""
    return float(_get("LEDGER_WITNESS_TIMEOUT_S", 3.0))


def witness_retries() -> int:
    """How many times the operator asks again after a network fault or a 5xx."""
    return int(_get("LEDGER_WITNESS_RETRIES", 2))


def witness_backoff_s() -> float:
    """The first pause before a retry; it doubles each time."""
    return float(_get("LEDGER_WITNESS_BACKOFF_S", 0.25))


def witness_parallel() -> int:
    """How many witnesses the operator asks at once."""
    return max(1, int(_get("LEDGER_WITNESS_PARALLEL", 8)))
