# Two commands do all set-up: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray]'
	touch $@

# The main job on the embedded simulated optical rig: calibrate it, then train through it.
demo: $(VENV)/.installed
	$(BIN)/xyoptics calibrate simulated --config experiments/xor_lattice_skip_rig.yaml --out runs/demo-calibration
	$(BIN)/xyoptics train experiments/xor_lattice_skip_rig.yaml --machine simulated \
		--calibration runs/demo-calibration --out runs/demo

# Headless Chromium for the monitor's browser test (tests/test_monitor.py), from the system packages where this
# user may install them (root on Debian or Ubuntu); without it that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		(export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium || \
		 (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1 || \
		echo "chromium could not be installed: the monitor's browser test will be skipped"

# One BLAS thread per process; pytest-xdist runs one worker per core (tests that share a fixture stay together).
test: $(VENV)/.installed-test chromium
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadgroup

bench: $(VENV)/.installed
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/relax.py --out benchmarks/results/relax.json
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/training.py --out benchmarks/results/training.json

clean:
	rm -rf $(VENV) runs
