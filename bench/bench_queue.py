"""Benchmark: the adjusters' work queue on a million claims (50,000 with --quick).

Claims are generated in PostgreSQL itself (``INSERT ... SELECT generate_series``): 30 providers,
statuses in the proportions of a working insurer (half paid, 15 % verified, 10 % needing review,
5 % rejected, a few still being verified...), amounts 0-2,000 USD (1 % without a total), one claim
every 30 seconds for about a year; checks for every rejected claim (one failed check in its
latest run, sometimes an older failure) and six passing checks for one claim in five; a thousand
holds. Then ``VACUUM ANALYZE``, as autovacuum would have done. Claim items are not generated:
the queue never reads them.

Timed: the queue page through Django's test ``Client`` with a signed-in adjuster (middleware,
session, roles, the query, the template), each case as the browser asks for it: the full page for
the first load, the htmx fragment for filtering, sorting, paging and search, and the status
counts. Every case runs ``SAMPLES`` times, interleaved with the others; p50 and p95 per case.
Reference, same run, same client: a trivial view of the same stack (``/queue/live/`` with no
claim: session, user, roles, a one-line template). The aim is p95 < 100 ms for every case.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from bench.common import Result, Row, Sizes, fmt, table

NAME = "queue"
TITLE = "Work queue: page time on generated claims (p95 aim < 100 ms) vs a trivial view"
AIM_MS = 100.0
PROVIDERS = 30

# status, share in thousandths (the rest of 1000 is paid), verdict it carries
MIX = [
    ("received", 3, ""),
    ("verifying", 4, ""),
    ("verified", 150, "verified"),
    ("needs_review", 100, "needs_review"),
    ("rejected", 50, "rejected"),
    ("info_requested", 20, "needs_review"),
    ("approved", 100, "verified"),
    ("denied", 40, "needs_review"),
    ("superseded", 10, "verified"),
    ("voided", 10, "verified"),
]
FAILS = ["signature", "fhir", "procedure:urn:uuid:p1", "binding", "double_billing", "related"]
PASSES = ["signature", "fhir", "procedure:urn:uuid:p1", "binding", "double_billing", "business"]


def _status_case() -> str:
    """SQL: the status of claim g, deterministic and spread over time."""
    parts, low = [], 0
    for status, share, _ in MIX:
        parts.append(f"WHEN b < {low + share} THEN '{status}'")
        low += share
    return "CASE " + " ".join(parts) + " ELSE 'paid' END"


def _verdict_case() -> str:
    parts = [f"WHEN '{s}' THEN '{v}'" for s, _, v in MIX]
    return "CASE status " + " ".join(parts) + " ELSE 'verified' END"


def generate(count: int) -> dict[str, Any]:
    """``count`` claims and their checks, in SQL; returns the ids the cases need."""
    from django.db import connection

    from claims.models import Provider
    from ledger.models import Member

    providers = []
    for i in range(PROVIDERS):
        member, _ = Member.objects.get_or_create(name=f"bench-provider-{i:02d}.example")
        provider, _ = Provider.objects.get_or_create(
            member=member, defaults={"name": f"Bench provider {i:02d}"}
        )
        providers.append(provider.pk)
    ids = "ARRAY[" + ",".join(map(str, providers)) + "]"
    chunk = 250_000
    with connection.cursor() as cursor:
        for start in range(1, count + 1, chunk):
            stop = min(start + chunk - 1, count)
            cursor.execute(
                f"""
                INSERT INTO claims_claim (public_id, provider_id, idempotency_key,
                    provider_reference, body_sha256, body, signed_payload, kid, use, total,
                    currency, relationship, status, verdict, verification_runs, created_at,
                    updated_at, fhir_rules)
                SELECT gen_random_uuid(), ({ids})[(1 + (g * 7) % {PROVIDERS})::int], 'bench-' || g,
                    'INV-' || lpad(g::text, 8, '0'), sha256(g::text::bytea),
                    convert_to(repeat('x', 200), 'UTF8'), convert_to('{{}}', 'UTF8'), 'bench-key',
                    'claim',
                    CASE WHEN g % 100 = 42 THEN NULL
                         ELSE round(((g * 7919) % 200000) / 100.0, 2) END,
                    'USD', '', s.status,
                    CASE WHEN s.status IN ('received', 'verifying') THEN '' ELSE
                        {_verdict_case().replace("status", "s.status", 1)} END,
                    CASE WHEN s.status = 'received' THEN 0 ELSE 1 + (g % 13 = 0)::int END,
                    now() - (({count} - g) * interval '30 seconds'),
                    now() - (({count} - g) * interval '30 seconds'), 0
                FROM generate_series({start}::bigint, {stop}) AS g,
                     LATERAL (SELECT {_status_case()} AS status
                              FROM (SELECT (g * 104729) % 1000 AS b) AS h) AS s
                """
            )
            print(f"  {stop:,} claims", flush=True)
        fails = "ARRAY[" + ",".join(f"'{n}'" for n in FAILS) + "]"
        passes = "ARRAY[" + ",".join(f"'{n}'" for n in PASSES) + "]"
        # A failed check in the latest run of every rejected claim (signature failures rare);
        # an older run's failure for some verified ones (it must not count).
        cursor.execute(
            f"""
            INSERT INTO claims_claimcheck (claim_id, run, name, outcome, sentence, evidence,
                checked_at)
            SELECT id, verification_runs,
                CASE WHEN id % 50 = 0 THEN 'signature'
                     ELSE ({fails})[(2 + id % {len(FAILS) - 1})::int] END,
                'fail', 'generated failure', '{{}}'::jsonb, created_at
            FROM claims_claim WHERE status = 'rejected'
            UNION ALL
            SELECT id, 1, ({fails})[(1 + id % {len(FAILS)})::int], 'fail', 'an older run failed',
                '{{}}'::jsonb, created_at
            FROM claims_claim WHERE status = 'verified' AND verification_runs = 2
            """
        )
        cursor.execute(
            f"""
            INSERT INTO claims_claimcheck (claim_id, run, name, outcome, sentence, evidence,
                checked_at)
            SELECT c.id, c.verification_runs, n.name, 'pass', 'generated pass', '{{}}'::jsonb,
                c.created_at
            FROM claims_claim c, unnest({passes}) AS n(name)
            WHERE c.id % 5 = 0 AND c.status NOT IN ('received', 'verifying', 'rejected')
            """
        )
        cursor.execute("SELECT count(*) FROM claims_claimcheck")
        checks = cursor.fetchone()[0]
    return {"providers": providers, "checks": checks}


def add_holds(count: int) -> None:
    from django.db import connection

    from review.roles import Role
    from tests.review.factories import user_with

    holder = user_with(Role.ADJUSTER, username="bench-holder")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO review_hold (claim_id, user_id, since)
            SELECT id, %s, now() FROM claims_claim WHERE status = 'verified'
            ORDER BY created_at DESC LIMIT %s
            """,
            [holder.pk, count],
        )


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table_name in ("claims_claim", "claims_claimcheck", "review_hold"):
            cursor.execute(f"VACUUM ANALYZE {table_name}")


def cases(count: int, providers: list[int]) -> dict[str, tuple[str, bool]]:
    """Case name -> (URL, full page?). Cursor ids and search terms come from the data."""
    from claims.models import Claim

    deep = Claim.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    deep_id = deep[int(count * 0.9)]
    by_amount = Claim.objects.filter(total__isnull=False).order_by("-total", "-id")
    deep_amount = by_amount.values_list("id", flat=True)[int(count * 0.5)]
    middle = Claim.objects.order_by("created_at").values("public_id", "created_at")[count // 2]
    day = middle["created_at"].date()
    week = {"created_from": day.isoformat(), "created_to": (day + timedelta(days=6)).isoformat()}
    base = "/queue/"

    def url(**params: Any) -> str:
        return f"{base}?{urlencode(params)}" if params else base

    return {
        "first page (full HTML page)": (url(), True),
        "first page (htmx fragment)": (url(), False),
        "deep keyset page (90% in)": (url(after=deep_id), False),
        "status = verified": (url(status="verified"), False),
        "status = verifying (rare)": (url(status="verifying"), False),
        "provider": (url(provider=providers[3]), False),
        "amount 100-200": (url(amount_min="100", amount_max="200"), False),
        "created in one week": (url(**week), False),
        "verdict = needs review": (url(verdict="needs_review"), False),
        "failed check = signature (rare)": (url(failed_check="signature"), False),
        "failed check = procedure": (url(failed_check="procedure"), False),
        "search: short claim id": (url(q=middle["public_id"].hex[:8]), False),
        "search: provider reference": (url(q=f"INV-{count // 3:08d}"), False),
        "search: reference prefix": (url(q=f"INV-{count // 3:08d}"[:-2]), False),
        "sort: amount, highest first": (url(sort="amount_desc"), False),
        "sort: amount, deep page (50% in)": (url(sort="amount_desc", after=deep_amount), False),
        "verified, one provider, <= 1000": (
            url(status="verified", provider=providers[5], amount_max="1000"),
            False,
        ),
        "status counts (unfiltered)": ("/queue/counts/", False),
        "status counts (one provider)": (f"/queue/counts/?provider={providers[3]}", False),
        "status counts (amount 100-200)": ("/queue/counts/?amount_min=100&amount_max=200", False),
        "status counts (failed check = signature)": (
            "/queue/counts/?failed_check=signature",
            False,
        ),
        "status counts (failed check = procedure)": (
            "/queue/counts/?failed_check=procedure",
            False,
        ),
        "status counts (verdict = needs review)": ("/queue/counts/?verdict=needs_review", False),
    }


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def explain(sql_cases: dict[str, str]) -> dict[str, str]:
    """The plan of the main query of a few cases (EXPLAIN ANALYZE, buffers)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from review import queue as q

    out = {}
    for name, params in sql_cases.items():
        from django.http import QueryDict

        query, _ = q.queue_query_parse(QueryDict(params))
        with CaptureQueriesContext(connection) as ctx:
            q.queue_page(query)
        main = next(
            x["sql"] for x in ctx.captured_queries if f"LIMIT {q.PAGE_SIZE + 1}" in x["sql"]
        )
        with q.interactive(), connection.cursor() as cursor:  # the page's own settings
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + main)
            out[name] = "\n".join(r[0] for r in cursor.fetchall())
    return out


def profile_requests(client: Any, url: str, count: int) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        client.get(url, headers={"HX-Request": "true"})
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def run(sizes: Sizes, state: dict[str, Any]) -> Result:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from review.roles import Role
    from tests.review.factories import user_with

    result = Result(NAME, TITLE)
    count = sizes.row_sizes[-1]  # 1,000,000 (50,000 with --quick): the table sizes of the run
    samples = 40 if count >= 1_000_000 else 20
    start = time.perf_counter()
    made = generate(count)
    add_holds(1000)
    vacuum()
    load_s = time.perf_counter() - start
    print(f"  generated {count:,} claims, {made['checks']:,} checks in {load_s:.0f} s", flush=True)

    client = Client(SERVER_NAME="localhost")
    client.force_login(user_with(Role.ADJUSTER, username="bench-adjuster"))
    todo = cases(count, made["providers"])
    reference_url = "/queue/live/"

    def get(url: str, full: bool) -> float:
        headers = {} if full else {"HX-Request": "true"}
        t0 = time.perf_counter()
        response = client.get(url, headers=headers)
        seconds = time.perf_counter() - t0
        if response.status_code != 200 or b'role="alert"' in response.content:
            raise RuntimeError(f"{url}: {response.status_code} {response.content[:300]!r}")
        return seconds * 1e3

    rows_seen: dict[str, int] = {}
    queries: dict[str, int] = {}
    for name, (url, full) in todo.items():  # warm-up, and what each case shows
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url, headers={} if full else {"HX-Request": "true"})
        rows_seen[name] = response.content.count(b'<tr id="claim-row-')
        queries[name] = len(ctx.captured_queries)
    get(reference_url, True)

    timings: dict[str, list[float]] = {name: [] for name in todo}
    reference: list[float] = []
    for _ in range(samples):
        reference.append(get(reference_url, True))
        for name, (url, full) in todo.items():
            timings[name].append(get(url, full))

    ref_p50, ref_p95 = _pct(reference, 0.5), _pct(reference, 0.95)
    lines = []
    for name, ms in timings.items():
        p50, p95 = _pct(ms, 0.5), _pct(ms, 0.95)
        lines.append(
            [name, fmt(p50, "ms"), fmt(p95, "ms"), str(rows_seen[name]), str(queries[name]),
             "yes" if p95 < AIM_MS else "NO"]
        )  # fmt: skip
        result.rows.append(
            Row(
                figure=f"{name} (requests/s at p95)",
                value=1e3 / p95,
                unit="/s",
                reference="trivial view, same client (p95)",
                reference_value=1e3 / ref_p95,
                note=f"p50 {p50:.1f} ms, p95 {p95:.1f} ms",
            )
        )
    for kind, names in (
        ("page", [n for n in timings if not n.startswith("status counts")]),
        ("status counts", [n for n in timings if n.startswith("status counts")]),
    ):
        worst_p95, worst_name = max((_pct(timings[n], 0.95), n) for n in names)
        result.rows.append(
            Row(
                figure=f"every {kind} case: 100 ms / worst p95",
                value=AIM_MS / worst_p95,
                unit="",
                reference="the aim, p95 < 100 ms",
                reference_value=1.0,
                aim=1.0,
                note=f"worst p95 {worst_p95:.1f} ms ({worst_name})",
            )
        )
    print(
        "\n"
        + table(
            ["case", "p50", "p95", "rows", "queries", "p95 < 100 ms?"],
            [
                *lines,
                ["reference: trivial view", fmt(ref_p50, "ms"), fmt(ref_p95, "ms"), "-", "-", "-"],
            ],
        )
    )
    profile = profile_requests(client, todo["first page (htmx fragment)"][0], 20)
    print("\n  profile of 20 first-page fragments (cumulative):\n" + profile)
    plans = explain(
        {
            "deep keyset page": f"after={todo['deep keyset page (90% in)'][0].split('after=')[1]}",
            "failed check = signature": "failed_check=signature",
            "failed check = procedure": "failed_check=procedure",
            "amount 100-200": "amount_min=100&amount_max=200",
        }
    )
    for name, plan in plans.items():
        print(f"\n  plan, {name}:\n    " + plan.replace("\n", "\n    "))
    result.details = {
        "claims": count,
        "checks": made["checks"],
        "generate_s": round(load_s, 1),
        "samples_per_case": samples,
        "cases": {
            name: {
                "p50_ms": round(_pct(ms, 0.5), 2),
                "p95_ms": round(_pct(ms, 0.95), 2),
                "mean_ms": round(statistics.fmean(ms), 2),
                "rows": rows_seen[name],
                "queries": queries[name],
            }
            for name, ms in timings.items()
        },
        "reference_ms": {"p50": round(ref_p50, 2), "p95": round(ref_p95, 2)},
        "plans": plans,
        "profile": profile,
    }
    return result
