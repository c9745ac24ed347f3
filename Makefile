# The two commands of the README. Each creates (or reuses) the project's virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

## Superpixels of a real sample slide plus a PNG overlay, written to demo-output/.
demo: venv
	$(BIN)/slidelabel demo --out demo-output

## Install what the tests need and run them.
test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m pytest
