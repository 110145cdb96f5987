# wod-hub: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.tools/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup setup-run run test test-fast test-docker test-oldest-hub lint bench clean

setup:            ## venv, wod-hub[test], proxy, Debian test packages
	bash scripts/setup.sh

setup-run:
	WOD_SETUP_APT=0 bash scripts/setup.sh

run: setup-run    ## the hub on http://localhost:8000 with the sample workshops, SQLite, a mail catcher
	bash scripts/run-local.sh

# the oldest JupyterHub wod-hub supports, and the tests that drive a real hub
JH_OLDEST := 5.3.0
HUB_TESTS := tests/test_register_http.py tests/test_admin_http.py tests/test_lifecycle_hub.py \
	tests/test_spawner.py tests/test_spawner_content.py tests/test_cli_ops.py

test: setup       ## the whole suite: unit, real hub + proxy, SMTP, PostgreSQL, Chromium, Docker; then the hub tests on JupyterHub 5.3
	$(PY) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-oldest-hub

test-oldest-hub: setup  ## the tests that drive a real hub, on the oldest supported JupyterHub
	bash scripts/setup-compat.sh $(JH_OLDEST)
	PATH=$(CURDIR)/.venv-jh$(JH_OLDEST)/bin:$$PATH .venv-jh$(JH_OLDEST)/bin/python -m pytest \
		-p no:cacheprovider -ra -m "not docker and not browser" $(HUB_TESTS)

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
	rm -rf run/ .pytest_cache build dist *.egg-info .venv-jh*
