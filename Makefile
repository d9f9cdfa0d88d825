# Two commands a reader needs: `make book` and `make test`. Every target installs what it needs itself.
PYTHON ?= python3
VENV   ?= .venv
PRESET ?= quick
DEVICE ?= auto
# Chapters run as local jobs, one per core (at most 4), each job with its share of the threads
# (OMP_NUM_THREADS = cores // jobs). Small nets gain little from a second intra-op thread: on the 2-core
# reference machine two one-thread chapters at a time built the quick book in 8.5 minutes; one two-thread
# chapter at a time took 24 (with other work on the machine; 28 alone with OMP_WAIT_POLICY=PASSIVE).
# EXECUTOR=sequential runs every chapter in this process, one after another.
EXECUTOR ?= local
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mclib-installed

.PHONY: setup browser book test cluster-test paper-path bench clean

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
	$(PY) -m mclib.book build --preset $(PRESET) --device $(DEVICE) --executor $(EXECUTOR) --jobs $(JOBS)

# The browser test reads the built book in headless Chromium. Installed here so that `make test` needs
# nothing by hand: Debian/Ubuntu's chromium and chromium-driver through apt (sudo when not root).
# Where that is impossible the target stops with one message naming what to install.
# The same paths the test opens (tests/test_browser.py): $MCLIB_CHROMIUM / $MCLIB_CHROMEDRIVER or /usr/bin.
CHROMIUM_MISSING = ! test -x "$${MCLIB_CHROMIUM:-/usr/bin/chromium}" || ! test -x "$${MCLIB_CHROMEDRIVER:-/usr/bin/chromedriver}"
browser:
	@if $(CHROMIUM_MISSING); then \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if ! command -v apt-get >/dev/null || [ "$$SUDO" = none ]; then \
	    echo "make browser: the browser test needs Chromium and its driver, and they cannot be installed here" \
	         "(no apt-get, or not root and no password-less sudo). Install them, e.g. 'sudo apt-get install chromium chromium-driver'" \
	         "on Debian/Ubuntu, or point MCLIB_CHROMIUM and MCLIB_CHROMEDRIVER at a chromium and a matching chromedriver." >&2; \
	    exit 1; \
	  fi; \
	  echo "make browser: installing Debian's chromium and chromium-driver for the browser test"; \
	  $$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null; \
	fi

test: setup browser
	$(PY) -m pytest

# The Slurm executor on a real scheduler: a one-node cluster on this machine (munged, slurmctld, slurmd
# started and stopped by tests/cluster/conftest.py, every file in a temporary folder), through which the
# tests build smoke chapters and tiny books. Debian's slurm-wlm daemons and munge come from apt where
# missing (as root, or password-less sudo, as for the browser); the daemons run as root (slurmd must).
# Services are never started by the install: a policy-rc.d that denies them is put in place for it where
# none exists (the one in Debian's container images already does).
SLURM_MISSING = ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null
cluster-test: setup
	@if $(SLURM_MISSING); then \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if ! command -v apt-get >/dev/null || [ "$$SUDO" = none ]; then \
	    echo "make cluster-test: the cluster test needs Slurm (slurmctld, slurmd, sbatch) and munge, and they cannot be" \
	         "installed here (no apt-get, or not root and no password-less sudo). Install them, e.g." \
	         "'sudo apt-get install slurmctld slurmd slurm-client munge' on Debian/Ubuntu." >&2; \
	    exit 1; \
	  fi; \
	  echo "make cluster-test: installing Debian's slurmctld, slurmd, slurm-client and munge"; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null && $$SUDO chmod 755 $$policy; fi; \
	  $$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
	    slurmctld slurmd slurm-client munge >/dev/null; status=$$?; \
	  if [ -n "$$policy" ]; then $$SUDO rm -f $$policy; fi; \
	  [ $$status -eq 0 ] || exit $$status; \
	fi
	@if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
	$$SUDO env MCLIB_CLUSTER_TEST=1 $(PY) -m pytest -m cluster tests/cluster

# The paper preset's code paths on a CPU (issue 27): every chapter at the paper-smoke preset (the paper tables'
# datasets, architectures, triggers, recipe at small sizes: mclib/presets/derived/paper-smoke.toml) on small,
# learnable CIFAR-10 and SVHN written in torchvision's on-disk format (tests/paper_data.py), in a temporary folder
# (data, build, model cache), so that no GPU user is the first to run a line. Prints each chapter's time; fails
# when any chapter fails, or when a C claim's record does not name both CIFAR-10 and SVHN (the paper pairs VGG with
# CIFAR-10 and ResNet with SVHN; tests/paper_data.py --check-records). PAPER_PATH_DIR keeps the folder.
paper-path: setup
	@dir="$${PAPER_PATH_DIR:-$$(mktemp -d "$${TMPDIR:-/tmp}/mclib-paper-path.XXXXXX")}"; \
	$(PY) tests/paper_data.py "$$dir/data" && \
	MCLIB_BUILD_DIR="$$dir/build" MCLIB_CACHE="$$dir/cache" $(PY) -m mclib.book build --preset paper-smoke --no-html \
	  --device $(DEVICE) --executor $(EXECUTOR) --jobs $(JOBS) --data-root "$$dir/data" && \
	$(PY) tests/paper_data.py --check-records "$$dir/build"; status=$$?; \
	if [ -z "$$PAPER_PATH_DIR" ]; then rm -rf "$$dir"; else echo "make paper-path: kept $$dir"; fi; exit $$status

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf _build
