# `make dev` runs Nudgeflow on its embedded default; `make test` runs the whole suite.
# Each installs what it needs first, and only that: `make dev` the tools to run (Python,
# Java and Maven for the local broker, only if missing), a virtualenv in .venv with the
# project, and the Kafka broker's jars (cached); `make test` adds what only the tests use
# (Chromium, Prometheus, docker-compose, the dev extras).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_PROGRESS_BAR := off

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= $(or $(shell command -v python3.11),$(shell command -v python3),python3.11)
KAFKA_VERSION ?= 4.1.1
PYTEST_FLAGS ?= -q -ra --durations=15
# The suite runs in two passes: every test not marked `load` spread over TEST_PROCS
# processes (each with its own broker; most of these tests wait on timers and sockets),
# then the `load` tests (the fault tests that put a worker under load and measure what it
# does: lag, latency, losses) alone, one at a time, so that they do not share the CPUs.
TEST_PROCS ?= 2

# Debian packages only the suite needs (the console in a browser, promtool, the compose
# file's validation); each is installed (after `apt-get update`) only if missing.
APT_PACKAGES ?= chromium prometheus docker-compose
# Tools to run, added only when their command is absent: Python 3.11 with venv, and
# Java + Maven for the local Kafka broker.
APT_TOOLS := $(if $(shell command -v python3.11),,python3.11 python3.11-venv) \
             $(if $(shell command -v java),,default-jre-headless) \
             $(if $(shell command -v mvn),,maven)

.PHONY: help install install-run system-deps test-system-deps kafka-jars test dev lint clean

help:
	@echo "make dev          install what running needs, then run Nudgeflow (Kafka + worker + web)"
	@echo "make test         install what the tests need too, then run the whole test suite"
	@echo "make install-run  the tools to run, .venv with the project, Kafka jars"
	@echo "make install      that, plus the test-only system packages and the dev extras"
	@echo "make lint         ruff + mypy + import contracts (lint-imports)"

install-run: system-deps $(VENV)/.installed kafka-jars

install: install-run test-system-deps $(VENV)/.installed-dev

system-deps:
	@scripts/apt-install $(strip $(APT_TOOLS))

test-system-deps:
	@scripts/apt-install $(strip $(APT_PACKAGES))

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

kafka-jars: $(VENV)/.installed
	@$(BIN)/python -m nudgeflow.kafka.jars $(KAFKA_VERSION)

test: install
	@rc=0; \
	$(BIN)/pytest $(PYTEST_FLAGS) -n $(TEST_PROCS) --dist loadfile -m "not load" \
	    --junitxml=test-artifacts/junit.xml tests || rc=$$?; \
	$(BIN)/pytest $(PYTEST_FLAGS) -m load --junitxml=test-artifacts/junit-load.xml tests \
	    || rc=$$?; \
	exit $$rc

dev: install-run
	$(BIN)/nudgeflow dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nudgeflow
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache .mypy_cache .ruff_cache
