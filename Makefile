# Both targets work on a fresh machine: they create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quix Streams pins an older confluent-kafka than the suite tests, so its interop test
# and the pipeline benchmark's reference run use a virtualenv of their own.
QUIX_VENV := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(QUIX_STAMP): pyproject.toml
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(QUIX_STAMP)

demo: $(STAMP)
	$(PY) -m onceflow demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

test: lint $(QUIX_STAMP)
	$(PY) -m pytest

bench: $(STAMP) $(QUIX_STAMP)
	$(PY) bench/broker_throughput.py
	$(PY) bench/transactional_throughput.py
	$(PY) bench/pipeline_throughput.py

clean:
	rm -rf $(VENV) $(QUIX_VENV) build dist src/*.egg-info
