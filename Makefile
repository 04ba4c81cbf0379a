# Two entry points: `make demo` and `make test`. Both create .venv and install tnerv into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# glibc otherwise returns large conv buffers to the OS after every pass (docs/dependencies.md).
export MALLOC_MMAP_THRESHOLD_ ?= 268435456
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, alone, so that the CPU wheel on disk (or the matching CUDA build) is the one chosen.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/tnerv demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info
