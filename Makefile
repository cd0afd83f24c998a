# PetSeg developer commands. `make run` and `make test` set up .venv themselves (once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_ENV := QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2

.PHONY: run test bench package clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency pins change.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/petseg $(ARGS)

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_inference.py

package: $(STAMP)
	$(BIN)/pyinstaller --noconfirm pyinstaller.spec

clean:
	rm -rf $(VENV) build dist *.egg-info
