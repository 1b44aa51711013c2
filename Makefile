# The two set-up commands of the README: `make run` and `make test`.
# Both create the virtualenv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test check bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	mkdir -p var
	$(BIN)/glowing-fiesta run --database-url sqlite:///var/glowing-fiesta.db --state-dir var

check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: check
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
