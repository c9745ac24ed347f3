# The two commands of the README. Each creates (or reuses) the project's virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The Girder plugin's environment: Girder 5's large_image plugins need a pre-release of
# large_image that slidelabel's own environment must not be moved to.
GIRDER_VENV := .venv-girder
GIRDER_BIN := $(GIRDER_VENV)/bin
# PyTorch's own wheel index, e.g. https://download.pytorch.org/whl/cpu for a CPU-only build
# (PyPI's Linux wheels are the CUDA build); empty: pip's configured index.
TORCH_INDEX_URL ?=
TORCH := torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))

.PHONY: demo test venv web plugin-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of PyTorch first: a bare torch requirement would download a CUDA build.
	$(BIN)/pip install --quiet $(TORCH)

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	# batchbald-redux's own requirements pull a CUDA torchvision that breaks imports: it and
	# toma (its chunking helper, which needs psutil) go in alone.
	$(BIN)/pip install --quiet --no-deps batchbald-redux==2.0.5 toma==1.1.0
	$(BIN)/pip install --quiet psutil

## The app at http://127.0.0.1:8000/ with a demo project on a real sample slide (Ctrl-C stops it).
demo: venv
	$(BIN)/slidelabel serve --demo --data-dir demo-data

## The web client, built into slidelabel/server/static/ (committed, so installs need no node).
web:
	cd web_client && npm ci && npm run build

## Install what the tests need and run them.
test: venv
	$(BIN)/pip install --quiet -e '.[test]'
	# The browser tests drive Debian's Chromium with the web client's node modules.
	[ -x /usr/bin/chromium ] || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "could not install chromium: the browser tests will be skipped"
	[ -d web_client/node_modules ] || ! command -v npm >/dev/null || (cd web_client && npm ci) \
		|| echo "npm ci failed: the web client's node tests will be skipped"
	# Two processes, a test file each at a time: most of the suite's time is spent waiting for
	# servers, workers and the browser, which then overlap.
	$(BIN)/python -m pytest -n 2 --dist loadfile
	$(MAKE) plugin-test

$(GIRDER_BIN)/python:
	$(PYTHON) -m venv $(GIRDER_VENV)
	$(GIRDER_BIN)/pip install --quiet --upgrade pip
	$(GIRDER_BIN)/pip install --quiet $(TORCH)

## The Girder plugin (plugin/) and slidelabel in their own environment, and the plugin's tests
## (Girder on mongomock: no MongoDB server is needed).
plugin-test: $(GIRDER_BIN)/python
	$(GIRDER_BIN)/pip install --quiet -c plugin/constraints.txt -e . -e './plugin[test]'
	$(GIRDER_BIN)/pip check
	$(GIRDER_BIN)/python -m pytest plugin/tests
