"""Benchmark 4: claims, verification throughput of one worker and intake, against raw Ed25519.

Claims are built the way tests/claims/factories.py builds them (its builders are reused): a
provider of the demo member ``stmarys.example`` with a registered JWS key; each claim bills 1 or
2 Procedures, anchored with ``anchor_append_many`` in NDJSON-sized batches, sealed and cosigned
once (``ledger_seal_and_cosign``), then wrapped in a signed Bundle. Nothing is mocked.

* **verification in batches** (timed): ``claims.verification.claim_verify_many`` in-process
  over batches of BATCH_SIZE claims submitted beforehand (untimed), as a worker that pulls what
  intake queued does. Every claim must end ``verified``. Reference: the faster Ed25519 binding,
  measured in the same run. Timed as a worker runs: garbage collector on, startup objects
  frozen (config/gc_freeze.py). Context: the rate of each part alone (PARTS: the checks in
  Python, the writes), the ceiling were the rest of the work free.
* context (timed): ``claims.verification.claim_verify``, one claim after another.
* **intake** (timed): ``claims.services.claim_submit`` on pre-signed bodies (context: same
  reference). Queuing the task goes to the configured broker (the filesystem broker under the
  bench's temporary var directory unless ``CELERY_BROKER_URL`` says otherwise).

Then the statements per claim of both paths (``CaptureQueriesContext``) and a cProfile of
each, so the next step is clear.
"""

from __future__ import annotations

import cProfile
import io
import itertools
import pstats
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.bench_anchors import _trim_profile, ed25519_contenders
from bench.common import Result, Row, Sizes, best, best_rates, fmt, spread, table
from config.gc_freeze import freeze_startup_objects

NAME = "claims"
TITLE = "4. Claims: verification (claim_verify_many, claim_verify) and intake vs raw Ed25519"
AIM = 0.5
BATCH = 500  # anchors per anchor_append_many call, as an EHR posting NDJSON
MEMBER = "stmarys.example"
BATCH_SIZE = 200  # claims per claim_verify_many, CLAIMS_VERIFY_BATCH's default

# (label, path suffix, function name): where a verification's time goes.
PROFILE_BUCKETS = [
    ("Django ORM, queries end to end (execute_sql)", "django/db/models/sql/compiler.py",
     "execute_sql"),
    ("PostgreSQL round trips (psycopg execute)", "psycopg/cursor.py", "execute"),
    ("signature check (checks.signature.check)", "claims/checks/signature.py", "check"),
    ("fhir check (checks.fhir.check)", "claims/checks/fhir.py", "check"),
    ("  FHIR validation (fhir_validation.validate_bundle)", "claims/fhir_validation.py",
     "validate_bundle"),
    ("    R4B models (fhir_validation._validate; not on a trusted first run)",
     "claims/fhir_validation.py", "_validate"),
    ("  exact JSON (money.loads)", "claims/money.py", "loads"),
    ("disclosures (disclosure.disclosed_procedures)", "claims/disclosure.py",
     "disclosed_procedures"),
    ("procedure checks (checks.ledger.check)", "claims/checks/ledger.py", "check"),
    ("binding (checks.binding.check)", "claims/checks/binding.py", "check"),
    ("business (checks.business.check)", "claims/checks/business.py", "check"),
    ("parse body and disclosures (verification._prepare)", "claims/verification.py", "_prepare"),
    ("concluding each claim (verification._settle)", "claims/verification.py", "_settle"),
    ("batched writes (verification._Writes.flush)", "claims/verification.py", "flush"),
    ("  the moves (states.claim_transitions_many)", "claims/states.py",
     "claim_transitions_many"),
    ("Ed25519 verify (jws._verify_raw)", "claims/jws.py", "_verify_raw"),
    ("RFC 8785 canonical JSON (rfc8785.dumps)", "rfc8785/_impl.py", "dumps"),
]  # fmt: skip


def _factories():
    from tests.claims import factories

    return factories


def anchored_procedures(count: int, seed: int = 1) -> list[Any]:
    """``count`` Procedures anchored by MEMBER in batches of BATCH, then sealed and cosigned."""
    from ledger import anchor, services

    f = _factories()
    rng = random.Random(seed)
    signer = f.member_anchor_key(MEMBER)
    when = datetime.now(UTC) - timedelta(minutes=5)
    procs = [f.procedure() for _ in range(count)]
    salts = [rng.randbytes(anchor.SALT_BYTES) for _ in procs]
    datas = [
        anchor.statement_sign(commitment=anchor.commitment(s, p), signer_key=signer, timestamp=when)
        for s, p in zip(salts, procs, strict=True)
    ]
    out = []
    for start in range(0, count, BATCH):
        results = services.anchor_append_many(datas=datas[start : start + BATCH])
        for offset, r in enumerate(results):
            if not getattr(r, "created", False):
                raise RuntimeError(f"anchoring a fresh Procedure failed: {r}")
            p = start + offset
            out.append(f.Anchored(procs[p], salts[p], r.leaf.index, r.leaf.leaf_hash))
    services.ledger_seal_and_cosign()
    return out


def signed_bodies(kit, count: int, seed: int = 2) -> list[bytes]:
    """``count`` signed claim Bundles, each billing 1 or 2 freshly anchored Procedures."""
    f = _factories()
    rng = random.Random(seed)
    shapes = [rng.choice((1, 2)) for _ in range(count)]
    anchored = iter(anchored_procedures(sum(shapes)))
    bodies = []
    for n in shapes:
        billed = list(itertools.islice(anchored, n))
        claim = f.claim_resource(billed, organization=kit.organization)
        bodies.append(f.signed_body(kit, claim, billed))
    return bodies


_keys = itertools.count(1)
_SAVEPOINT = re.compile(r'SAVEPOINT "[^"]+"')
_NUMBERS = re.compile(r"\d+")


def submit_all(kit, bodies: list[bytes]) -> list[int]:
    from claims.services import claim_submit

    return [
        claim_submit(
            provider=kit.provider, user=kit.user, body=b, idempotency_key=f"bench-{next(_keys)}"
        ).claim.pk
        for b in bodies
    ]


def _verifier(ids: list[int], rounds: int):
    from claims.states import ClaimStatus
    from claims.verification import claim_verify

    per_round = len(ids) // rounds
    slices = iter(ids[i * per_round : (i + 1) * per_round] for i in range(rounds))

    def verify() -> int:
        batch = next(slices)
        for claim_id in batch:
            claim = claim_verify(claim_id=claim_id)
            if claim.status != ClaimStatus.VERIFIED:
                raise RuntimeError(f"claim {claim_id} ended {claim.status}, not verified")
        return len(batch)

    return verify


# Parts of a batch timed on their own: the rate each would allow were the rest free.
#   checks: parsing, every check (signature, FHIR, procedures and proofs, binding, business)
#           in Python on what the batch read beforehand;
#   writes: _Writes.flush, the moves (claims, events, audit entries), check rows, item answers.
PARTS = {
    "checks": (("claims.verification", "_prepare"), ("claims.verification", "_first_checks"),
               ("claims.verification", "_last_checks")),
    "writes": (("claims.verification._Writes", "flush"),),
}  # fmt: skip


def _resolve(dotted: str) -> Any:
    import importlib

    module, _, attr = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


def _batch_verifier(ids: list[int], rounds: int, size: int, parts: dict[str, list[float]]):
    """Rounds of ``claim_verify_many`` over batches of ``size`` claims, as a worker pulling
    what intake queued does. ``parts[name]`` gets each round's claims per second of the time
    spent in that part of the work (PARTS)."""
    from claims.states import ClaimStatus
    from claims.verification import claim_verify_many

    per_round = len(ids) // rounds
    slices = iter(ids[i * per_round : (i + 1) * per_round] for i in range(rounds))
    spent = dict.fromkeys(PARTS, 0.0)
    targets = [(name, _resolve(owner), attr) for name, fns in PARTS.items() for owner, attr in fns]
    originals = [(owner, attr, getattr(owner, attr)) for _, owner, attr in targets]

    def timer(name: str, fn):
        def timed_part(*args, **kwargs):
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - began

        return timed_part

    def verify() -> int:
        batch = next(slices)
        spent.update(dict.fromkeys(PARTS, 0.0))
        for (name, owner, attr), (_, _, fn) in zip(targets, originals, strict=True):
            setattr(owner, attr, timer(name, fn))
        try:
            for start in range(0, len(batch), size):
                chunk = batch[start : start + size]
                done = claim_verify_many(claim_ids=chunk)
                bad = [c for c in done if c.status != ClaimStatus.VERIFIED]
                if len(done) != len(chunk) or bad:
                    raise RuntimeError(f"a batch left {len(chunk) - len(done)} claims, {bad[:1]}")
        finally:
            for owner, attr, fn in originals:
                setattr(owner, attr, fn)
        for name, seconds in spent.items():
            parts.setdefault(name, []).append(len(batch) / seconds)
        return len(batch)

    return verify


def _submitter(kit, bodies: list[bytes], rounds: int):
    per_round = len(bodies) // rounds
    slices = iter(bodies[i * per_round : (i + 1) * per_round] for i in range(rounds))

    def submit() -> int:
        batch = next(slices)
        submit_all(kit, batch)
        return len(batch)

    return submit


def count_queries(ids: list[int], batch: int = 0) -> tuple[float, dict[str, list[float]]]:
    """Queries per verification, and per statement (its first 70 characters): how many per
    claim and the milliseconds they take per claim; ``batch``: through ``claim_verify_many``
    in batches of that size."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from claims.verification import claim_verify, claim_verify_many

    with CaptureQueriesContext(connection) as ctx:
        if batch:
            for start in range(0, len(ids), batch):
                claim_verify_many(claim_ids=ids[start : start + batch])
        else:
            for claim_id in ids:
                claim_verify(claim_id=claim_id)
    shapes: dict[str, list[float]] = {}
    for q in ctx.captured_queries:
        sql = _NUMBERS.sub("N", _SAVEPOINT.sub("SAVEPOINT", " ".join(q["sql"].split())))[:70]
        seen = shapes.setdefault(sql, [0, 0.0])
        seen[0] += 1 / len(ids)
        seen[1] += float(q["time"]) * 1e3 / len(ids)
    return len(ctx.captured_queries) / len(ids), shapes


def profile_verifications(ids: list[int], batch: int = 0) -> tuple[str, list[dict[str, Any]]]:
    from claims.verification import claim_verify, claim_verify_many

    profiler = cProfile.Profile()
    profiler.enable()
    if batch:
        for start in range(0, len(ids), batch):
            claim_verify_many(claim_ids=ids[start : start + batch])
    else:
        for claim_id in ids:
            claim_verify(claim_id=claim_id)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue(), _buckets(stats, len(ids))


def _buckets(stats: pstats.Stats, count: int) -> list[dict[str, Any]]:
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    out = []
    for label, suffix, func in PROFILE_BUCKETS:
        entries = [v for (path, _, name), v in raw.items() if path.endswith(suffix)
                   and name == func]  # fmt: skip
        # cumulative time of a recursive function counts once: the outermost calls (cc < nc)
        seconds = sum(v[3] for v in entries)
        calls = sum(v[1] for v in entries)
        out.append(
            {
                "what": label,
                "calls_per_claim": calls / count,
                "us_per_claim": seconds / count * 1e6,
                "share": seconds / total if total else 0.0,
            }
        )
    return out


def _print_queries(label: str, per_claim: float, shapes: dict[str, list[float]]) -> None:
    print(f"\n  {label}: {per_claim:.1f} statements per claim; by statement:")
    rows = [[sql, f"{n:.2f}", f"{ms:.2f}"] for sql, (n, ms) in shapes.items()]
    print("    " + table(["statement", "per claim", "ms per claim"], rows).replace("\n", "\n    "))


def _print_profile(label: str, count: int, text: str, buckets: list[dict[str, Any]]) -> None:
    print(f"\n  cProfile of {count} verifications ({label}), top 25 by cumulative time:")
    print("    " + _trim_profile(text).replace("\n", "\n    "))
    print(f"  where a verification's time goes ({label}; cumulative, overlapping):")
    body = [
        [b["what"], f"{b['calls_per_claim']:.2f}", f"{b['us_per_claim']:.0f}", f"{b['share']:.0%}"]
        for b in buckets
    ]
    print(
        "    " + table(["call", "calls/claim", "us/claim", "share"], body).replace("\n", "\n    "),
        flush=True,
    )


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    result = Result(NAME, TITLE)
    state.pop("log", None)
    rounds = sizes.rounds
    per_round = sizes.claims_per_round
    kit = _factories().make_provider(MEMBER)

    # Everything below the line is built untimed, before any round.
    verify_count = per_round * rounds
    probe = 40  # warm-up (the tile cache), then the query count
    profiled = sizes.claims_profiled
    wanted = 2 * (verify_count + probe + profiled) + BATCH_SIZE + per_round * rounds
    bodies = signed_bodies(kit, wanted)
    to_submit = bodies[-per_round * rounds :]
    ids = submit_all(kit, bodies[: -per_round * rounds])

    def cut(n: int) -> list[int]:
        nonlocal ids
        out, ids = ids[:n], ids[n:]
        return out

    # the statements of a batch counted on one whole batch (as the timed rounds run them)
    warm, probe_one, probe_many = cut(probe // 2), cut(probe // 2), cut(probe + BATCH_SIZE)
    probe_many = probe_many[probe:]
    timed_one, timed_many = cut(verify_count), cut(verify_count)
    profiled_one, profiled_many = cut(profiled), cut(profiled)
    _verifier(warm, 1)()
    per_claim_queries, shapes = count_queries(probe_one)
    batch_queries, batch_shapes = count_queries(probe_many, batch=BATCH_SIZE)

    contenders = ed25519_contenders(sizes.ed25519_verifies)
    contenders["claim_verify"] = _verifier(timed_one, rounds)
    parts: dict[str, list[float]] = {}
    contenders["claim_verify_many"] = _batch_verifier(timed_many, rounds, BATCH_SIZE, parts)
    contenders["claim_submit"] = _submitter(kit, to_submit, rounds)
    # Timed as a worker runs: collector on, what the process loaded at start frozen (the
    # worker's config/celery.py does the same), not paused as in the micro-benchmarks.
    freeze_startup_objects()
    rates = best_rates(contenders, rounds, gc_paused=False)
    verify_rates = rates.pop("claim_verify")
    many_rates = rates.pop("claim_verify_many")
    submit_rates = rates.pop("claim_submit")
    ref_name, ref_rate = max(((k, best(v)) for k, v in rates.items()), key=lambda kv: kv[1])
    verified, many, submitted = best(verify_rates), best(many_rates), best(submit_rates)
    procedures = sum(body.count(b'"resourceType": "Procedure"') for body in bodies) / len(bodies)
    result.rows.append(
        Row(
            figure=f"claim_verify_many, batches of {BATCH_SIZE}, one worker (claims/s)",
            value=many,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            aim=AIM,
            note=f"{procedures:.2f} Procedures per claim, {batch_queries:.1f} statements/claim",
        )
    )
    for name, what in (("checks", "parsing and checks in Python"), ("writes", "writes")):
        result.rows.append(
            Row(
                figure=f"context: the {what} alone of those batches (claims/s)",
                value=best(parts[name]),
                unit="",
                reference=f"{ref_name} (faster binding)",
                reference_value=ref_rate,
                note=f"the ceiling were everything but the {what} free",
            )
        )
    result.rows.append(
        Row(
            figure="context: claim_verify, one claim at a time (claims/s)",
            value=verified,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
            note=f"{per_claim_queries:.1f} statements per claim",
        )
    )
    result.rows.append(
        Row(
            figure="context: claim_submit in-process (claims/s)",
            value=submitted,
            unit="",
            reference=f"{ref_name} (faster binding)",
            reference_value=ref_rate,
        )
    )
    one_text, one_buckets = profile_verifications(profiled_one)
    many_text, many_buckets = profile_verifications(profiled_many, batch=BATCH_SIZE)
    result.details = {
        "claims_per_round": per_round,
        "batch_size": BATCH_SIZE,
        "procedures_per_claim": procedures,
        "queries_per_verification": per_claim_queries,
        "statements_per_claim_in_batches": batch_queries,
        "ed25519_rates": {k: best(v) for k, v in rates.items()},
        "profile_top25": one_text,
        "profile_buckets": one_buckets,
        "batch_profile_top25": many_text,
        "batch_profile_buckets": many_buckets,
    }
    for name, values in rates.items():
        print(f"  {name:<38} {fmt(best(values))} verifies/s ({spread(values)})")
    print(
        f"  claim_verify_many ({BATCH_SIZE}): {fmt(many)} claims/s = {1e3 / many:.2f} ms per claim "
        f"({spread(many_rates)}); {procedures:.2f} Procedures per claim"
    )
    for name, rates_of_part in parts.items():
        print(
            f"    the {name} alone: {fmt(best(rates_of_part))} claims/s = "
            f"{1e3 / best(rates_of_part):.2f} ms per claim ({spread(rates_of_part)})"
        )
    print(
        f"  claim_verify: {fmt(verified)} claims/s = {1e3 / verified:.2f} ms per claim "
        f"({spread(verify_rates)})"
    )
    print(
        f"  claim_submit: {fmt(submitted)} claims/s = {1e3 / submitted:.2f} ms per claim "
        f"({spread(submit_rates)})"
    )
    _print_queries(f"claim_verify_many, batches of {BATCH_SIZE}", batch_queries, batch_shapes)
    _print_queries("claim_verify, one claim at a time", per_claim_queries, shapes)
    _print_profile(f"batches of {BATCH_SIZE}", len(profiled_many), many_text, many_buckets)
    _print_profile("one at a time", len(profiled_one), one_text, one_buckets)
    return result
