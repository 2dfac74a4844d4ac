# Two commands set up a fresh clone: `make demo` runs the live chat, `make test` runs every test.
# `make demo PORT=9000 HOST=0.0.0.0 BOTS=0` changes where the demo listens and its synthetic users;
# `make notebook` opens the notebooks in JupyterLab (the `jupyter` extra); `make docs` builds the
# documentation site into site/ (mkdocs.yml), executing the notebooks.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080
BOTS ?= 3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo notebook notebooks docs docs-strict test lint bench services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rxstreams demo --host $(HOST) --port $(PORT) --bots $(BOTS)

notebook: $(STAMP)
	$(BIN)/python -c 'import jupyterlab' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[jupyter]'
	$(BIN)/jupyter lab notebooks/

notebooks: $(STAMP)
	$(BIN)/python scripts/render-notebooks

# The site, with the notebooks executed again (about 30 s: notebook 04 runs servers on NATS and
# Redis). Preview while editing with `$(BIN)/mkdocs serve`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# What `make test` checks: a broken link, a missing page or an API reference that does not
# resolve fails. It renders the notebooks' committed outputs (docs/notebooks, kept in sync by
# tests/notebooks/test_rendered.py) instead of executing them: the tests run every notebook
# already, and this stays a few seconds.
docs-strict: $(STAMP)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	NO_MKDOCS_2_WARNING=1 RXSTREAMS_DOCS_EXECUTE=false $(BIN)/mkdocs build --strict --quiet -d "$$tmp/site"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint docs-strict
	bash scripts/ensure-chromium
	bash scripts/ensure-services
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b; done
