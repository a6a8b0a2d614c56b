# The two commands: `make run` (the service on embedded defaults) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint services bench-train bench-ingest demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(VENV)/bin/hilum run

services:
	bash tests/services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy hilum service worker pipelines models bench

test: $(STAMP) services lint
	$(PY) -m pytest -q

bench-train: $(STAMP)
	$(PY) bench/train.py

bench-ingest: $(STAMP)
	$(PY) bench/ingest.py
