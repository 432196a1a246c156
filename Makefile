# Tested versions; setup.py declares the ranges other machines may use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: env test test-fast quickstart benchmark clean

env: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test]" $(TORCH_PINS)
	touch $@

test: env
	$(PY) -m pytest -q -ra

test-fast: env
	$(PY) -m pytest -q -ra -m "not slow"

clean:
	rm -rf output .pytest_cache
