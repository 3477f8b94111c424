# ClaimProof. `make run` and `make test` work from a clean clone; see README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test bench lint format venv clean-var migrate demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ledger_init
	$(PY) manage.py demo_load

## Serve the app with a Celery worker and beat (SQLite and the filesystem broker under var/
## unless DATABASE_URL / CELERY_BROKER_URL are set).
run: demo
	$(PY) scripts/serve.py

## The whole test suite, against the machine's PostgreSQL and Redis (REQUIRE_SERVICES=1 makes
## their absence a failure), then the API paths again on SQLite, the embedded default of
## `make run`. pytest exits 5 when it collected no test: that fails too.
SQLITE_TESTS := tests/ledger/test_api.py tests/ledger/test_sealing.py \
	tests/ledger/test_anchor_batch.py tests/ledger/test_audit.py tests/ledger/test_ledger_views.py \
	tests/claims/test_intake_api.py tests/claims/test_provider_keys.py \
	tests/test_role_matrix.py tests/test_demo.py tests/review/test_claim_page.py \
	tests/review/test_dashboard.py tests/audit/test_chain.py tests/audit/test_page.py
test: venv
	$(PY) -m pytest
	TEST_DB=sqlite $(PY) -m pytest -q -p no:cacheprovider $(SQLITE_TESTS)

bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-var:
	rm -rf var
