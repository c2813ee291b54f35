# postroom developer tasks: make install | run | test | lint | bench | clean | distclean
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamp file: pip only runs again when pyproject.toml changes or the venv is new.
STAMP := $(VENV)/.postroom-installed
BENCH_ARGS ?=

.PHONY: install run test lint bench clean distclean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	touch $@

run: install
	test -f postroom.toml || $(BIN)/postroom --config postroom.toml init --hostname localhost --domain localhost
	$(BIN)/postroom --config postroom.toml serve

test: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Extra flags: make bench BENCH_ARGS="--messages 500 --only postfix,aiosmtpd"
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis bench/results
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
