"""Benchmark 3: anchor appends through the service against raw Ed25519 verification.

``services.anchor_append(data=...)`` parses the statement, finds the member's key, checks the
Ed25519 signature, and inserts the leaf (the unique commitment deduplicates), with no HTTP in
between. Statements are signed beforehand by the ``ledger_init`` members' keys. The reference is
the faster of PyNaCl's ``VerifyKey.verify`` and cryptography's ``Ed25519PublicKey.verify`` on
64-byte messages: an append can never beat the one signature check it must do.
One more run is profiled (cProfile), to show where the time goes.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import sysconfig
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench import fixtures
from bench.common import (
    ROOT,
    Result,
    Row,
    Sizes,
    best,
    best_rates,
    durable_commits,
    fmt,
    spread,
    table,
)

NAME = "anchors"
TITLE = "3. Anchor appends (services.anchor_append) vs raw Ed25519 verification"
AIM = 0.5
MESSAGE_BYTES = 64

# (label, path suffix, function name): the calls the profile is summarised by.
PROFILE_BUCKETS = [
    (
        "Django ORM, queries end to end (execute_sql)",
        "django/db/models/sql/compiler.py",
        "execute_sql",
    ),
    ("Django ORM, building SQL (compiler.as_sql)", "django/db/models/sql/compiler.py", "as_sql"),
    ("PostgreSQL round trips (psycopg execute)", "psycopg/cursor.py", "execute"),
    ("PostgreSQL commit (WAL flush)", "psycopg/connection.py", "commit"),
    ("key lookup (services._anchor_key)", "ledger/services.py", "_anchor_key"),
    ("append lock (services._lock)", "ledger/services.py", "_lock"),
    ("statement parse (anchor.statement_parse)", "ledger/anchor.py", "statement_parse"),
    ("statement verify (anchor.statement_verify)", "ledger/anchor.py", "statement_verify"),
    ("Ed25519 verify (PyNaCl)", "nacl/signing.py", "verify"),
    ("RFC 8785 canonical JSON (rfc8785.dumps)", "rfc8785/_impl.py", "dumps"),
]


def presign(count: int) -> list[bytes]:
    """``count`` anchor statements signed by the members' anchor keys, round robin."""
    from ledger import anchor, keys

    signers = [p.read_text().strip() for p in sorted(keys.members_dir().glob("*.key"))]
    if not signers:
        raise RuntimeError("no member anchor keys: did ledger_init run?")
    rng = random.Random(4)
    now = datetime.now(UTC)
    return [
        anchor.statement_sign(
            commitment=rng.randbytes(32), signer_key=signers[i % len(signers)], timestamp=now
        )
        for i in range(count)
    ]


def ed25519_contenders(count: int) -> dict[str, Callable[[], int]]:
    """Verify ``count`` signatures on 64-byte messages with PyNaCl and with cryptography."""
    import nacl.signing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    messages = [os.urandom(MESSAGE_BYTES) for _ in range(256)]
    nacl_key = nacl.signing.SigningKey.generate()
    nacl_pairs = [(m, nacl_key.sign(m).signature) for m in messages]
    nacl_verify = nacl_key.verify_key.verify
    crypto_key = Ed25519PrivateKey.generate()
    crypto_pairs = [(m, crypto_key.sign(m)) for m in messages]
    crypto_verify = crypto_key.public_key().verify

    def pynacl() -> int:
        for i in range(count):
            m, s = nacl_pairs[i & 255]
            nacl_verify(m, s)
        return count

    def cryptography() -> int:
        for i in range(count):
            m, s = crypto_pairs[i & 255]
            crypto_verify(s, m)
        return count

    return {"PyNaCl VerifyKey.verify": pynacl, "cryptography Ed25519PublicKey.verify": cryptography}


def _appender(statements: list[bytes], rounds: int) -> Callable[[], int]:
    """Each call appends the next slice of ``statements``; every one must create a leaf."""
    from ledger import services

    per_round = len(statements) // rounds
    batches = iter(statements[i * per_round : (i + 1) * per_round] for i in range(rounds))

    def append() -> int:
        batch = next(batches)
        for data in batch:
            if not services.anchor_append(data=data).created:
                raise RuntimeError("a fresh statement was answered as a duplicate")
        return len(batch)

    return append


BATCH = 500


def _batch_appender(statements: list[bytes], rounds: int) -> Callable[[], int]:
    """Each call appends the next slice of ``statements`` in NDJSON-sized batches of BATCH."""
    from ledger import services

    per_round = len(statements) // rounds
    slices = iter(statements[i * per_round : (i + 1) * per_round] for i in range(rounds))

    def append() -> int:
        batch = next(slices)
        for start in range(0, len(batch), BATCH):
            results = services.anchor_append_many(datas=batch[start : start + BATCH])
            if not all(getattr(r, "created", False) for r in results):
                raise RuntimeError("a fresh statement in a batch was not appended")
        return len(batch)

    return append


def profile_appends(statements: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    """cProfile ``statements`` appends: top 15 by cumulative time, and the summary buckets."""
    from ledger import services

    profiler = cProfile.Profile()
    profiler.enable()
    for data in statements:
        services.anchor_append(data=data)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(15)
    return out.getvalue(), _buckets(stats, len(statements))


def _buckets(stats: pstats.Stats, count: int) -> list[dict[str, Any]]:
    """Cumulative time of the calls in PROFILE_BUCKETS, per append and as a share of the total."""
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    out = []
    for label, suffix, func in PROFILE_BUCKETS:
        entries = [
            v for (path, _, name), v in raw.items() if path.endswith(suffix) and name == func
        ]
        seconds = sum(v[3] for v in entries)  # v = (cc, nc, tt, ct, callers)
        calls = sum(v[1] for v in entries)
        out.append(
            {
                "what": label,
                "calls_per_append": calls / count,
                "us_per_append": seconds / count * 1e6,
                "share": seconds / total if total else 0.0,
            }
        )
    return out


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    result = Result(NAME, TITLE)
    state.pop("log", None)  # the million-leaf pymerkle tree is no longer needed
    fixtures.reset_ledger()
    rounds = sizes.rounds
    batched = sizes.anchors * 4
    statements = presign(sizes.anchors + sizes.anchors_profiled + 20 + batched)
    warmup, timed_part = statements[:20], statements[20 : 20 + sizes.anchors]
    profiled = statements[20 + sizes.anchors : 20 + sizes.anchors + sizes.anchors_profiled]
    batch_part = statements[20 + sizes.anchors + sizes.anchors_profiled :]
    _appender(warmup, 1)()

    contenders = ed25519_contenders(sizes.ed25519_verifies)
    contenders["anchor_append"] = _appender(timed_part, rounds)
    contenders["anchor_append_many"] = _batch_appender(batch_part, rounds)
    contenders["commit"] = durable_commits(sizes.anchors // rounds)
    rates = best_rates(contenders, rounds)
    appends = best(rates.pop("anchor_append"))
    batched_rate = best(rates.pop("anchor_append_many"))
    commits = rates.pop("commit")
    ref_name, ref_rate = max(((k, best(v)) for k, v in rates.items()), key=lambda kv: kv[1])
    result.rows.append(
        Row(
            figure="anchor_append (appends/s)",
            value=appends,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            aim=AIM,
        )
    )
    result.rows.append(
        Row(
            figure=f"anchor_append_many, batches of {BATCH} (appends/s)",
            value=batched_rate,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            aim=AIM,
            note="what an EHR posting its anchors as NDJSON gets: one transaction per batch",
        )
    )
    result.rows.append(
        Row(
            figure="context: 1-row INSERT+COMMIT, raw psycopg (/s)",
            value=best(commits),
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            note="the most a one-transaction-per-append design can do here",
        )
    )
    profile_text, buckets = profile_appends(profiled)
    result.details = {
        "appends_per_round": len(timed_part) // rounds,
        "ed25519_rates": {k: best(v) for k, v in rates.items()},
        "durable_commits_per_s": best(commits),
        "profile_top15": profile_text,
        "profile_buckets": buckets,
    }
    for name, values in rates.items():
        print(f"  {name:<38} {fmt(best(values))} verifies/s ({spread(values)})")
    print(f"  anchor_append: {fmt(appends)} appends/s = {1e6 / appends:.0f} us per append")
    print(
        f"  anchor_append_many: {fmt(batched_rate)} appends/s = {1e6 / batched_rate:.0f} us "
        f"per append in batches of {BATCH}"
    )
    print(
        f"  raw psycopg INSERT+COMMIT: {fmt(best(commits))}/s = {1e6 / best(commits):.0f} us "
        "per durable commit (the ceiling of one transaction per append)"
    )
    print(f"\n  cProfile of {len(profiled)} appends, top 15 by cumulative time:")
    print("    " + _trim_profile(profile_text).replace("\n", "\n    "))
    print("  where an append's time goes (cumulative, overlapping: execute is inside lookups):")
    body = [
        [
            b["what"],
            f"{b['calls_per_append']:.1f}",
            f"{b['us_per_append']:.0f}",
            f"{b['share']:.0%}",
        ]
        for b in buckets
    ]
    print(
        "    "
        + table(["call", "calls/append", "us/append", "share"], body).replace("\n", "\n    "),
        flush=True,
    )
    return result


def _trim_profile(text: str) -> str:
    """pstats output without its blank lines and preamble about ordering."""
    lines = [ln for ln in text.splitlines() if ln.strip() and "Ordered by" not in ln]
    site = sysconfig.get_paths()["purelib"]
    return "\n".join(ln.replace(site + "/", "").replace(f"{ROOT}/", "") for ln in lines)
