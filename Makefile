# Two commands a reader needs: `make book` and `make test`. Every target installs what it needs itself.
PYTHON ?= python3
VENV   ?= .venv
PRESET ?= quick
DEVICE ?= auto
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mclib-installed

.PHONY: setup book test bench clean

setup: $(STAMP)

# Reinstalled whenever pyproject.toml changes. The kernel is registered inside the venv under the
# name the runner asks for ("mclib"), so papermill never picks up another Python by accident.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name mclib --display-name "Python (mclib)" >/dev/null
	touch $@

book: setup
	$(PY) -m mclib.book build --preset $(PRESET) --device $(DEVICE)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf _build
