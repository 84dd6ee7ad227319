# Two entry points, both self-contained on a fresh machine (see README):
#   make demo   set up .venv and run the main retrofit job (the depth demo) on embedded defaults
#   make test   set up .venv with the test tools and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
PACKS = -e ./plugins/depth_midas -e ./plugins/doom_arnold -e ./plugins/codegen

.PHONY: demo test setup setup-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

setup: $(VENV)/bin/python
	$(PIP) -e ".[torch]" $(PACKS)

setup-test: setup
	$(PIP) -e ".[test,dask]" -e "./plugins/codegen[humaneval]" ./examples/curve_plugin

demo: setup
	$(VENV)/bin/retrofit depth tune

test: setup-test
	$(VENV)/bin/python -m pytest
