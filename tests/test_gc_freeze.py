"""The web and worker processes leave what they load at start out of full collections
(config/gc_freeze.py): verification allocates many small objects, and every full collection
would otherwise walk Django, DRF and the FHIR models again."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _in_fresh_process(code: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wsgi_application_loads_its_views_then_freezes_them():
    out = _in_fresh_process(
        "import gc, sys; import config.wsgi; "
        "print(gc.get_freeze_count(), 'config.urls' in sys.modules)"
    )
    frozen, urlconf_loaded = out.split()
    # Without the freeze the count is 0; the URLconf (views, DRF, the R4B models) is in it.
    assert int(frozen) > 100_000
    # config.urls, not a module Django's set-up imports anyway (claims.fhir_validation comes
    # with the middleware): only get_resolver() in config/wsgi.py loads it before a request.
    assert urlconf_loaded == "True"


def test_celery_pool_processes_freeze_at_start():
    out = _in_fresh_process(
        "import gc, django; django.setup(); from config.celery import app; "
        "from celery.signals import worker_process_init; "
        "import claims.tasks; worker_process_init.send(sender=None); "
        "print(gc.get_freeze_count())"
    )
    assert int(out) > 100_000
