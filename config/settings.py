"""The one settings module. Production behaviour comes from environment variables; with none set,
the project runs on embedded defaults under var/ (SQLite, Celery's filesystem broker, local keys).
"""

import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

VAR_DIR = Path(env("CLAIMPROOF_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/ (never in git)."""
    if value := env("SECRET_KEY", default=""):
        return value
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "ledger",
    "claims",
    "jobs",
    "audit",
    "review",
    "payments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # POST /api/v1/claims from a remembered token: a new claim's 202 without the middleware
    # below and DRF (claims/api.py); anything else goes on unchanged
    "claims.api.IntakeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "review.context.workspace",
            ],
        },
    }
]

# --- database: PostgreSQL in production, SQLite under var/ by default ------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers queue instead
    # of failing with "database is locked" half way; WAL lets the pages read while a worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        # FULL: an anchor answered 201 survives a power cut (NORMAL could roll it back).
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on a missing folder before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "review:dashboard"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG and "DATABASE_URL" in env)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ClaimProof API",
    "DESCRIPTION": "Consortium ledger (RFC 9162, C2SP checkpoints) and claims verification.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Celery: Redis in production, the filesystem broker under var/ by default ----------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue = VAR_DIR / "broker" / "queue"
    _processed = VAR_DIR / "broker" / "processed"
    _control = VAR_DIR / "broker" / "control"
    for _folder in (_queue, _processed, _control):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "processed_folder": str(_processed),
        "store_processed": False,
        "control_folder": str(_control),
        "polling_interval": 0.1,  # the default (1 s) takes one message per second
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- the consortium ledger ---------------------------------------------------------------------
LEDGER_ORIGIN = env("LEDGER_ORIGIN", default="ledger.claimproof.example")
LEDGER_KEYS_DIR = Path(env("LEDGER_KEYS_DIR", default=str(VAR_DIR / "keys")))
# The operator's signer key (Go note format): LEDGER_OPERATOR_KEY, else the file.
LEDGER_OPERATOR_KEY = env("LEDGER_OPERATOR_KEY", default="")
LEDGER_OPERATOR_KEY_FILE = Path(
    env("LEDGER_OPERATOR_KEY_FILE", default=str(LEDGER_KEYS_DIR / "operator.key"))
)
LEDGER_QUORUM = env.int("LEDGER_QUORUM", default=2)
LEDGER_SEAL_INTERVAL_S = env.float("LEDGER_SEAL_INTERVAL_S", default=5.0)
LEDGER_SEAL_BATCH = env.int("LEDGER_SEAL_BATCH", default=100_000)
LEDGER_ANCHOR_MAX_BYTES = env.int("LEDGER_ANCHOR_MAX_BYTES", default=2048)
LEDGER_TILE_CACHE_MB = env.int("LEDGER_TILE_CACHE_MB", default=64)  # proof tile cache; 0 = off
# How long a process trusts the latest checkpoint it read before reading it again (0 = per
# request). Proofs against the latest tree are then served from the tile cache with no query.
LEDGER_CHECKPOINT_TTL_S = env.float("LEDGER_CHECKPOINT_TTL_S", default=1.0)
LEDGER_ANCHOR_BATCH_MAX = env.int("LEDGER_ANCHOR_BATCH_MAX", default=1000)
# Django refuses larger bodies before our views can answer 413 themselves: leave room for a batch.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(
    2_621_440, LEDGER_ANCHOR_BATCH_MAX * (LEDGER_ANCHOR_MAX_BYTES + 2) + 1024
)
LEDGER_ANCHOR_MAX_SKEW = timedelta(seconds=env.int("LEDGER_ANCHOR_MAX_SKEW_S", default=300))
# --- the consortium (docs/consortium.md) --------------------------------------------------------
# This node as a C2SP tlog-witness: the name it cosigns under ("" = no witness; its key from
# LEDGER_WITNESS_KEY_<NAME> or var/keys/witnesses/<name>.key) and the logs it follows, as JSON
# {"<origin>": "<log verifier key>"}.
LEDGER_WITNESS_NAME = env("LEDGER_WITNESS_NAME", default="")
LEDGER_WITNESS_LOGS = env.json("LEDGER_WITNESS_LOGS", default={})
LEDGER_WITNESS_MAX_BODY = env.int("LEDGER_WITNESS_MAX_BODY", default=65536)
# The operator asking witnesses over HTTP: per-request timeout, retries with doubling backoff,
# and how many witnesses are asked at once.
LEDGER_WITNESS_TIMEOUT_S = env.float("LEDGER_WITNESS_TIMEOUT_S", default=3.0)
LEDGER_WITNESS_RETRIES = env.int("LEDGER_WITNESS_RETRIES", default=2)
LEDGER_WITNESS_BACKOFF_S = env.float("LEDGER_WITNESS_BACKOFF_S", default=0.25)
LEDGER_WITNESS_PARALLEL = env.int("LEDGER_WITNESS_PARALLEL", default=8)
if LEDGER_QUORUM < 1:
    raise ImproperlyConfigured("LEDGER_QUORUM must be at least 1")

CELERY_BEAT_SCHEDULE = {
    "ledger-seal": {
        "task": "ledger.tasks.ledger_seal_task",
        "schedule": LEDGER_SEAL_INTERVAL_S,
        "options": {"expires": LEDGER_SEAL_INTERVAL_S * 2},
    },
    "claims-sweep": {
        "task": "claims.tasks.claims_sweep_task",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 240},
    },
    "ledger-audit-nightly": {
        "task": "ledger.tasks.ledger_audit_task",
        "schedule": timedelta(days=1),
    },
    "jobs-verify-nightly": {
        "task": "jobs.tasks.jobs_nightly_task",
        "schedule": timedelta(days=1),
    },
    "jobs-sweep": {
        "task": "jobs.tasks.jobs_sweep_task",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 240},
    },
    # a payment run's collection or chunk whose message was lost is queued again
    "payments-sweep": {
        "task": "payments.tasks.payments_sweep_task",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 240},
    },
}
PAYMENTS_CHUNK_SIZE = env.int("PAYMENTS_CHUNK_SIZE", default=200)
PAYMENTS_SWEEP_AFTER_S = env.int("PAYMENTS_SWEEP_AFTER_S", default=900)
PAYMENTS_PAYER_NAME = env("PAYMENTS_PAYER_NAME", default="ClaimProof")

# --- claims ------------------------------------------------------------------------------------
CLAIMS_MAX_BYTES = env.int("CLAIMS_MAX_BYTES", default=1_048_576)
# Business rules that flag a claim for review (never reject it).
CLAIMS_REVIEW_ABOVE = Decimal(env("CLAIMS_REVIEW_ABOVE", default="5000.00"))
CLAIMS_FEE_TOLERANCE = Decimal(env("CLAIMS_FEE_TOLERANCE", default="0.10"))  # 10 % over schedule
# Verification waiting for a final checkpoint retries with backoff up to this long.
CLAIMS_VERIFY_WAIT_MAX_S = env.int("CLAIMS_VERIFY_WAIT_MAX_S", default=3600)
CLAIMS_VERIFY_BACKOFF_BASE_S = env.float("CLAIMS_VERIFY_BACKOFF_BASE_S", default=2.0)
CLAIMS_VERIFY_BACKOFF_MAX_S = env.float("CLAIMS_VERIFY_BACKOFF_MAX_S", default=300.0)
# The sweeper re-queues claims stuck in received/verifying longer than this.
CLAIMS_SWEEP_AFTER_S = env.int("CLAIMS_SWEEP_AFTER_S", default=600)
# A worker verifies its claim and up to this many others waiting, in one transaction.
CLAIMS_VERIFY_BATCH = env.int("CLAIMS_VERIFY_BATCH", default=200)
# On Redis, intake asks for a drain of the backlog instead of a task per claim (claims/drain.py);
# the key saying a drain is pending expires after CLAIMS_DRAIN_KEY_TTL_S.
CLAIMS_VERIFY_COALESCE = env.bool("CLAIMS_VERIFY_COALESCE", default=True)
CLAIMS_DRAIN_KEY_TTL_S = env.int("CLAIMS_DRAIN_KEY_TTL_S", default=30)
# POST /api/v1/claims remembers a token this long per process; its INSERT re-checks the token in
# the same statement, so a revocation still counts from the next request (claims/auth.py).
CLAIMS_TOKEN_REMEMBER_S = env.float("CLAIMS_TOKEN_REMEMBER_S", default=60.0)

# --- batch jobs (docs/jobs.md) -----------------------------------------------------------------
JOBS_CHUNK_SIZE = env.int("JOBS_CHUNK_SIZE", default=200)  # claims per chunk task
JOBS_VERIFY_BATCH = env.int("JOBS_VERIFY_BATCH", default=200)  # claims per transaction
# The sweeper re-queues a job's planning or chunks when the job has not moved for this long.
JOBS_SWEEP_AFTER_S = env.int("JOBS_SWEEP_AFTER_S", default=900)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- adjuster workspace -----------------------------------------------------------------------
# Above this total two different adjusters must approve (four-eyes); above the senior amount one
# of them must be a senior adjuster. A hold (a claim under review) lapses after the TTL.
REVIEW_FOUR_EYES_ABOVE = Decimal(env("REVIEW_FOUR_EYES_ABOVE", default="1000.00"))
REVIEW_SENIOR_ABOVE = Decimal(env("REVIEW_SENIOR_ABOVE", default="10000.00"))
REVIEW_HOLD_TTL_S = env.int("REVIEW_HOLD_TTL_S", default=1800)
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)  # one working day

# --- audit trail: chained at each seal, its head anchored by this node's member ------------------
AUDIT_ANCHOR_MEMBER = env("AUDIT_ANCHOR_MEMBER", default="acme-insurance.example")
AUDIT_CHAIN_BATCH = env.int("AUDIT_CHAIN_BATCH", default=20_000)

# --- verifying claims against a mirror of another node's log (C2SP tlog-tiles) ---------------
# Empty LEDGER_MIRROR_URL: claims are proven against this node's own ledger tables.
LEDGER_MIRROR_URL = env("LEDGER_MIRROR_URL", default="")
LEDGER_MIRROR_LOG_KEY = env("LEDGER_MIRROR_LOG_KEY", default="")
# empty: the live cosigning keys of the members this node knows
LEDGER_MIRROR_WITNESS_KEYS = env.json("LEDGER_MIRROR_WITNESS_KEYS", default=[])
LEDGER_MIRROR_CHECKPOINT_TTL_S = env.float("LEDGER_MIRROR_CHECKPOINT_TTL_S", default=5.0)
LEDGER_MIRROR_TIMEOUT_S = env.float("LEDGER_MIRROR_TIMEOUT_S", default=5.0)
