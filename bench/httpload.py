"""A small closed-loop HTTP load generator, run as its own process by the HTTP benchmarks.

    python bench/httpload.py --port 8123 --path /api/v1/claims --token T --bodies bodies.ndjson \
        --concurrency 16 --duration 10 [--warmup 2] [--once] [--key-prefix run1]

Each of ``--concurrency`` threads keeps one HTTP/1.1 keep-alive connection and POSTs the next
body (one per line of ``--bodies``; cycled unless ``--once``) with its own ``Idempotency-Key``,
waits for the answer and goes on. Requests started during ``--warmup`` are not counted. Prints
one JSON object: requests, answers by status, rate, latency percentiles (ms) and the answers
completed per second.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import threading
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--bodies", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--once", action="store_true", help="send each body once, then stop")
    p.add_argument("--key-prefix", default="load")
    return p.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    counter = itertools.count()
    start = time.perf_counter()
    counted_from = start + args.warmup
    deadline = counted_from + args.duration
    samples: list[tuple[float, float, int]] = []  # (finished, latency s, status)
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=60)
        mine: list[tuple[float, float, int]] = []
        while True:
            i = next(counter)
            if args.once and i >= len(bodies):
                break
            began = time.perf_counter()
            if began >= deadline:
                break
            body = bodies[i % len(bodies)]
            headers = {
                "Authorization": f"Token {args.token}",
                "Content-Type": "application/fhir+json",
                "Idempotency-Key": f"{args.key_prefix}-{i}",
            }
            try:
                conn.request("POST", args.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(args.host, args.port, timeout=60)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(args.host, args.port, timeout=60)
            ended = time.perf_counter()
            if began >= counted_from:
                mine.append((ended - start, ended - began, status))
        conn.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not samples:
        print(json.dumps({"requests": 0}))
        return 1
    first = min(s[0] - s[1] for s in samples)
    last = max(s[0] for s in samples)
    seconds = max(last - first, 1e-9)
    statuses: dict[str, int] = {}
    for _, _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    latencies = [s[1] * 1e3 for s in samples]
    per_second: dict[int, int] = {}
    for finished, _, _ in samples:
        per_second[int(finished - first)] = per_second.get(int(finished - first), 0) + 1
    print(
        json.dumps(
            {
                "requests": len(samples),
                "statuses": statuses,
                "seconds": seconds,
                "rate": len(samples) / seconds,
                "p50_ms": percentile(latencies, 0.50),
                "p90_ms": percentile(latencies, 0.90),
                "p99_ms": percentile(latencies, 0.99),
                "max_ms": max(latencies),
                "first_s": first,
                "per_second": [per_second.get(s, 0) for s in range(int(seconds) + 1)],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
