# Two commands matter: `make chat` and `make test`. Each sets everything up first (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup chat test lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing streamchat (llama-cpp-python compiles from source the first time: a few minutes)"
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

chat: setup
	$(BIN)/streamchat chat

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .venv-seed build *.egg-info .pytest_cache .ruff_cache
