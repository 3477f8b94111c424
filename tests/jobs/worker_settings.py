"""Settings of the Celery worker processes the jobs tests start: the project's settings, with a
broker visibility timeout short enough that a message held by a worker killed with SIGKILL comes
back within seconds (production keeps an hour: there the jobs sweeper re-queues sooner)."""

import environ

from config.settings import *  # noqa: F403

_env = environ.Env()
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _env.int("TEST_VISIBILITY_TIMEOUT_S", default=3),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
# Claims re-verified together in one transaction (config/settings.py has no variable for it yet).
JOBS_VERIFY_BATCH = _env.int("JOBS_VERIFY_BATCH", default=200)
