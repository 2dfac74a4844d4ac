# Two commands set up a fresh clone: `make demo` runs the live chat, `make test` runs every test.
# `make demo PORT=9000 HOST=0.0.0.0 BOTS=0` changes where the demo listens and its synthetic users;
# `make notebook` opens the notebooks in JupyterLab (the `jupyter` extra).
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080
BOTS ?= 3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo notebook notebooks test lint bench services

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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	bash scripts/ensure-chromium
	bash scripts/ensure-services
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b; done
