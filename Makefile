PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/airlock: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/airlock

demo: $(BIN)/airlock
	$(BIN)/airlock demo

test: $(BIN)/airlock
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(BIN)/airlock
	$(BIN)/ruff check src tests bench

bench: $(BIN)/airlock
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .demo-data
