PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/airlock: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# GPT-2's vocabulary ships in openai-whisper's package data; its own dependencies (torch) are not needed.
	$(BIN)/pip install -q --no-deps 'openai-whisper>=20240930'
	@touch $(BIN)/airlock

demo: $(BIN)/airlock
	$(BIN)/airlock demo

# The tests run inside a network namespace with only loopback where the machine allows it, so any
# outbound connection attempt by the product or the tests fails.
test: $(BIN)/airlock
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	@if unshare -rn true 2>/dev/null; then \
		echo "tests: in a network namespace with only loopback (unshare -rn)"; \
		unshare -rn $(BIN)/python tests/offline.py $(BIN)/python -m pytest -q && \
		echo "tests: the writer's scheduling once more outside it (a user namespace may not leave SCHED_IDLE)" && \
		$(BIN)/python -m pytest -q -rs tests/record/test_scheduling.py; \
	else \
		echo "tests: unshare -rn is not permitted here, running with the host network"; \
		$(BIN)/python -m pytest -q; \
	fi

lint: $(BIN)/airlock
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(BIN)/airlock
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .demo-data
