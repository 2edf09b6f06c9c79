# Two commands do all set-up: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

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

# One BLAS thread per process; pytest-xdist runs one worker per core (tests that share a fixture stay together).
test: $(VENV)/.installed-test
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadgroup

bench: $(VENV)/.installed
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/relax.py --out benchmarks/results/relax.json
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/training.py --out benchmarks/results/training.json

clean:
	rm -rf $(VENV) runs
