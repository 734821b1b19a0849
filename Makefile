# Two commands matter: `make chat` and `make test`. Each sets everything up first (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-packages chat test docs lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing streamchat (llama-cpp-python compiles from source the first time: a few minutes)"
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

chat: setup
	$(BIN)/streamchat chat

# What the suite drives from Debian: Chromium for the web page (never `playwright install`: it
# cannot download), nginx and PostgreSQL for the deployment and history tests, curl and openssl
# for HTTP/2. Installed when missing and run as root; in CI (CI=true) a test that would skip
# for want of one of them fails instead.
system-packages:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing from Debian:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "missing:$$missing (apt-get install them as root): the tests that need them skip"; fi; \
	fi

# Two pytest workers (pytest-xdist), each taking whole files (their module-scoped servers and
# engines start once); every run in a new random order (pytest-randomly), its seed printed first
# (-q hides pytest's own header): `make test TEST_SEED=N` runs that order again.
ifndef TEST_SEED
TEST_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
test: setup system-packages
	$(BIN)/ruff check src tests benchmarks
	$(MAKE) --no-print-directory docs
	@echo "test order: pytest-randomly seed $(TEST_SEED) (make test TEST_SEED=$(TEST_SEED) repeats it)"
	$(BIN)/pytest -q -n 2 --dist loadfile --randomly-seed=$(TEST_SEED)

# The documentation site (docs/, mkdocs.yml) into build/docs; any warning fails the build.
# Offline and a few seconds; the examples in it run in tests/test_docs_examples.py.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Every benchmark script (not _common.py, not report.py), then RESULTS.md from their JSON files.
# A smoke run: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: setup
	@for script in benchmarks/*.py; do \
		case "$${script##*/}" in _*|report.py) continue;; esac; \
		echo "== $$script $(BENCH_ARGS)"; $(BIN)/python $$script $(BENCH_ARGS) || exit 1; \
	done
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) .venv-seed .venv-extras build *.egg-info .pytest_cache .ruff_cache
