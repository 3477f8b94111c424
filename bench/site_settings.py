"""Settings of the gunicorn and Celery processes the HTTP benchmarks start: production settings,
plus one trivial endpoint of the same stack (``bench/site_urls.py``) and a queue of the bench's own
(``CLAIMPROOF_BENCH_QUEUE``) so that a bench never feeds, or eats from, anyone else's workers."""

import os

from config.settings import *  # noqa: F403  (production settings, unchanged but for the below)

ROOT_URLCONF = "bench.site_urls"
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CLAIMPROOF_BENCH_QUEUE", "celery")
if "CLAIMPROOF_BENCH_TOKEN_REMEMBER_S" in os.environ:  # 0: intake reads its token every time
    CLAIMS_TOKEN_REMEMBER_S = float(os.environ["CLAIMPROOF_BENCH_TOKEN_REMEMBER_S"])
