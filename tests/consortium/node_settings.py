"""Settings of a second node process started by the consortium tests: the project's settings,
the C2SP endpoints at the root, and the witness settings from the environment (what
config/settings.py will read itself once the consortium settings are added there)."""

import environ

from config.settings import *  # noqa: F403

_env = environ.Env()
ROOT_URLCONF = "tests.consortium.urls"
LEDGER_WITNESS_NAME = _env("LEDGER_WITNESS_NAME", default="")
LEDGER_WITNESS_LOGS = _env.json("LEDGER_WITNESS_LOGS", default={})
