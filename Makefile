# `make demo` and `make test` set up everything they need on a fresh machine.
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test lint

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --no-cache-dir -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	snakemake --profile profiles/local

lint: $(VENV)/.installed
	ruff check .
	ruff format --check .
	snakefmt --check .
	snakemake --lint
	lint-imports

test: lint
	pytest
