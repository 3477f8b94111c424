"""The Celery application: configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("claimproof")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
@worker_ready.connect
def _freeze_startup_objects(**_) -> None:
    """Each pool process (prefork) and the worker's main process (solo and threads pools) stop
    re-walking what they loaded at start in every full collection (config/gc_freeze.py)."""
    from config.gc_freeze import freeze_startup_objects

    freeze_startup_objects()
