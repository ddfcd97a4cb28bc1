# One command to run, one to test; both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The examples run in their own interpreter (torch, sentence-transformers): gpupool's venv stays without
# torch, so the suite keeps exercising the NumPy proof-of-compute path.
EXAMPLES_VENV ?= .venv-examples
EXAMPLES_REQS := examples/embeddings/requirements.txt

.PHONY: run up test examples-venv browser lint bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

$(EXAMPLES_VENV)/.installed: $(EXAMPLES_REQS)
	$(PYTHON) -m venv $(EXAMPLES_VENV)
	$(EXAMPLES_VENV)/bin/pip install -q -r $(EXAMPLES_REQS)
	touch $@

examples-venv: $(EXAMPLES_VENV)/.installed

run: $(VENV)/.installed-run
	@echo "gpupool is installed in $(VENV). From another terminal in this folder: ./gpupool --help"
	@echo "(or: source $(VENV)/bin/activate, then gpupool ...). The README's First hour walks through it."
	$(BIN)/gpupool up

# The dashboard's browser tests drive Debian's chromium (Playwright points at /usr/bin/chromium and
# downloads nothing). Installed when missing; a machine that has it is left as it is.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

test: $(VENV)/.installed-dev $(EXAMPLES_VENV)/.installed browser
	GPUPOOL_EXAMPLES_PYTHON=$(abspath $(EXAMPLES_VENV)/bin/python) $(BIN)/pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/ledger.py

# The gRPC code generated from src/gpupool/rpc/protos/nodepool.proto (committed; a test checks it is current).
proto: $(VENV)/.installed-dev
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		gpupool/rpc/protos/nodepool.proto

clean:
	rm -rf $(VENV) $(EXAMPLES_VENV) .pytest_cache .mypy_cache .ruff_cache
