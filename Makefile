PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/airlock: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,scale]'
	# GPT-2's vocabulary ships in openai-whisper's package data; its own dependencies (torch) are not needed.
	$(BIN)/pip install -q --no-deps 'openai-whisper>=20240930'
	@touch $(BIN)/airlock

demo: $(BIN)/airlock
	$(BIN)/airlock demo

# The server backends are started first and the tests run inside a network namespace with only
# loopback where the machine allows it: see tests/run.sh.
test: $(BIN)/airlock
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	@./tests/run.sh $(BIN)

lint: $(BIN)/airlock
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(BIN)/airlock
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .demo-data
