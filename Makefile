# Every target bootstraps what it needs: `make test` and `make demo` work as the first
# command on a fresh Debian 12 with python3, python3-venv, python3-pip, make and git.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the tests drive for real: promtool and the Prometheus server, the
# Alertmanager, and Chromium for the dashboard's browser tests.
SYSTEM_PACKAGES := prometheus prometheus-alertmanager chromium
SYSTEM_STAMP := $(VENV)/.system-stamp

.PHONY: setup system-deps test lint unit bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Installs the Debian packages above when they are missing (needs root, as on CI).
# TACHIMETER_NO_SYSTEM_DEPS=1 skips this; the tests that need them then skip, saying why.
$(SYSTEM_STAMP): Makefile | $(STAMP)
	@if [ "$${TACHIMETER_NO_SYSTEM_DEPS:-0}" = "1" ]; then \
		echo "TACHIMETER_NO_SYSTEM_DEPS=1: not installing $(SYSTEM_PACKAGES)"; \
	else \
		missing=""; \
		for pkg in $(SYSTEM_PACKAGES); do \
			dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
		done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	fi
	touch $(SYSTEM_STAMP)

system-deps: $(SYSTEM_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/pytest

test: lint unit

bench: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/python -m bench

# Fills .demo/analytics.db with 30 days of agent data, then serves the dashboard on
# http://127.0.0.1:8717 until Ctrl-C.
demo: $(STAMP)
	rm -rf .demo
	$(BIN)/tachimeter demo --events 20000 --store .demo/analytics.db --serve

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
