PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
export FHIRTWIN_INSTANCE ?= $(CURDIR)/instance
DEMO := $(wildcard ../shared/data/synthea)
JOBS ?= 2

.PHONY: install run test lint unit api e2e clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fhirtwin db init
	@if [ -n "$(DEMO)" ] && [ ! -f "$(FHIRTWIN_INSTANCE)/.demo-loaded" ]; then \
		$(BIN)/fhirtwin load "$(DEMO)/blaze-synthea-2.7" "$(DEMO)/smart-generated-sample-data-r4" && \
		touch "$(FHIRTWIN_INSTANCE)/.demo-loaded"; fi
	$(BIN)/fhirtwin demo --host $(HOST) --port $(PORT)
	$(BIN)/fhirtwin serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check app config tests bench wsgi.py
	$(BIN)/mypy app config

# The whole suite in process, then the API suite again against a real gunicorn server.
test: lint
	$(BIN)/python -m pytest -q -n $(JOBS) tests
	FHIRTWIN_TEST_MODE=http $(BIN)/python -m pytest -q -n $(JOBS) tests/api

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) instance *.egg-info
