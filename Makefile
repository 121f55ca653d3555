# Everything runs inside a virtual environment that this Makefile creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint typecheck check clean demo
.PHONY: docs docs-build docs-reference

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

## Run the whole test suite (the command CI runs).
test: install
	$(BIN)/python -m pytest

## Lint and format check.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Strict type check of the library, and of the public API as a user types it.
typecheck: install
	$(BIN)/mypy --strict src tests/typing

check: lint typecheck test

.PHONY: fuzz

FUZZ_SECONDS ?= 180

## Fuzz the redaction policy for FUZZ_SECONDS (default 180): planted secrets must not
## survive, and no input may take superlinear time. CI runs a short, bounded round.
fuzz: install
	$(BIN)/python fuzz/fuzz_redact.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
		-artifact_prefix=$(or $(TMPDIR),/tmp)/backend-kit-fuzz-

.PHONY: bench-report

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@

## Run every benchmark (a few minutes; BENCH_ARGS=--quick for a rough look) and write
## their figures to docs/performance.md, docs/assets/performance.json and .png.
bench-report: $(BIN)/.bench-installed
	$(BIN)/python benchmarks/report.py $(BENCH_ARGS)

# Material for MkDocs prints a banner about its future on every build; the docs
# targets keep their output to what concerns this project.
DOCS_ENV := NO_MKDOCS_2_WARNING=1

## Serve the documentation on http://127.0.0.1:8001 (8000 is the demo's default), rebuilt on
## every change.
docs: install
	$(DOCS_ENV) $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

## Build the documentation into site/; any warning (a broken link, a docstring
## mkdocstrings cannot read) fails the build.
docs-build: install
	$(DOCS_ENV) $(BIN)/mkdocs build --strict --site-dir site

## Regenerate docs/reference/configuration.md from the settings model.
docs-reference: install
	$(BIN)/python docs/gen_config_reference.py

DEMO_VENV ?= .demo/venv
DEMO_BIN := $(DEMO_VENV)/bin
DEMO_PORT ?= 8000
DEMO_URL := http://127.0.0.1:$(DEMO_PORT)

# The first run installs the package, Flask and gunicorn into .demo/venv from the
# package index (pip's usual one, or PIP_INDEX_URL); later runs reuse them.
$(DEMO_BIN)/.installed: pyproject.toml
	@echo "make demo: first run, installing backend_kit, Flask and gunicorn into $(DEMO_VENV) from the package index"
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_BIN)/python -m pip install --quiet --upgrade pip
	$(DEMO_BIN)/python -m pip install --quiet -e ".[flask]" "gunicorn>=22"
	touch $@

## Run the example Flask service on 127.0.0.1:8000 (DEMO_PORT=8080 make demo to
## move it) on embedded defaults: in-memory cache, a SQLite file under .demo/, no
## Sentry. The first run installs its packages from the package index; after that it
## needs no network.
demo: $(DEMO_BIN)/.installed
	@echo ""
	@echo "  The example catalog service (examples/flask_app) on $(DEMO_URL)"
	@echo ""
	@echo "    curl -i $(DEMO_URL)/"
	@echo "    curl -i -X POST $(DEMO_URL)/products -H 'Content-Type: application/json' \\"
	@echo "         -d '{\"sku\": \"tea\", \"name\": \"Green tea\", \"price\": 4.5}'"
	@echo "    curl -i $(DEMO_URL)/products"
	@echo "    curl -i '$(DEMO_URL)/products/tea/price?currency=EUR'   # retried, then cached"
	@echo "    curl -i -H 'X-Request-ID: my-request-1' $(DEMO_URL)/products"
	@echo "    curl -i $(DEMO_URL)/livez    # also /readyz and /healthz (details in development)"
	@echo ""
	@echo "  Each request logs one request_finished line below, except the health probes"
	@echo "  (/livez, /readyz, /healthz, /startupz): they log at debug, which the demo's"
	@echo "  info level hides (CATALOG_LOG_LEVEL=DEBUG shows them). Ctrl-C stops the service."
	@echo ""
	cd examples/flask_app && \
	  CATALOG_ENVIRONMENT=development \
	  CATALOG_DATABASE_URL=sqlite:///$(CURDIR)/.demo/catalog.sqlite3 \
	  $(abspath $(DEMO_BIN))/python -m gunicorn --bind 127.0.0.1:$(DEMO_PORT) --threads 4 app:app

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis dist build site

EXAMPLE_BROKER ?= redis://127.0.0.1:6379/1

## Run the Django example's Celery worker against the local Redis (EXAMPLE_BROKER,
## default redis://127.0.0.1:6379/1). Start the project with the same
## SHOP_CELERY_BROKER_URL to publish to it (examples/django_project/README.md).
.PHONY: example-worker
example-worker: install
	cd examples/django_project && \
	  SHOP_ENVIRONMENT=development \
	  SHOP_DATABASE_URL=sqlite:////tmp/shop.sqlite3 \
	  SHOP_CELERY_BROKER_URL=$(EXAMPLE_BROKER) \
	  $(abspath $(BIN))/python -m celery -A shop --quiet worker --pool solo
