# wod-hub: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.tools/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup setup-run run test test-fast test-docker lint bench clean

setup:            ## venv, wod-hub[test], proxy, Debian test packages
	bash scripts/setup.sh

setup-run:
	WOD_SETUP_APT=0 bash scripts/setup.sh

run: setup-run    ## the hub on http://localhost:8000 with the sample workshops, SQLite, a mail catcher
	bash scripts/run-local.sh

test: setup       ## the whole suite: unit, real hub + proxy, SMTP, PostgreSQL, Chromium, Docker
	$(PY) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

test-fast: setup  ## everything but Docker and the browser
	$(PY) -m pytest -p no:cacheprovider -ra -m "not docker and not browser" $(PYTEST_ARGS)

test-docker: setup
	$(PY) -m pytest -p no:cacheprovider -ra -m docker $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check wod_hub tests benchmarks
	$(VENV)/bin/ruff format --check wod_hub tests benchmarks

bench: setup      ## benchmarks against stock JupyterHub, printed
	$(PY) -m benchmarks

clean:
	rm -rf run/ .pytest_cache build dist *.egg-info
