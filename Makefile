# `make dev` runs Nudgeflow on its embedded default; `make test` runs the whole suite.
# Both install what they need first: system packages (only if missing), a virtualenv in
# .venv with the project and its dev extras, and the Kafka broker's jars (cached).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_PROGRESS_BAR := off

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= $(or $(shell command -v python3.11),$(shell command -v python3),python3.11)
KAFKA_VERSION ?= 4.1.1
PYTEST_FLAGS ?= -q -ra --durations=15 --junitxml=test-artifacts/junit.xml

# Debian packages the suite needs; each is installed (after `apt-get update`) only if missing.
APT_PACKAGES ?= chromium prometheus docker-compose
# Tools, added only when their command is absent: Python 3.11 with venv, and Java + Maven
# for the local Kafka broker.
APT_TOOLS := $(if $(shell command -v python3.11),,python3.11 python3.11-venv) \
             $(if $(shell command -v java),,default-jre-headless) \
             $(if $(shell command -v mvn),,maven)

.PHONY: help install system-deps kafka-jars test dev lint clean

help:
	@echo "make dev      install, then run Nudgeflow (local Kafka + worker + web)"
	@echo "make test     install, then run the whole test suite"
	@echo "make install  system packages, .venv, Kafka jars"
	@echo "make lint     ruff + mypy + import contracts (lint-imports)"

install: system-deps $(VENV)/.installed kafka-jars

system-deps:
	@scripts/apt-install $(strip $(APT_TOOLS) $(APT_PACKAGES))

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

kafka-jars: $(VENV)/.installed
	@$(BIN)/python -m nudgeflow.kafka.jars $(KAFKA_VERSION)

test: install
	$(BIN)/pytest $(PYTEST_FLAGS)

dev: install
	$(BIN)/nudgeflow dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nudgeflow
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache .mypy_cache .ruff_cache
