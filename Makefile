# `make run` starts the whole local stack; `make test` runs every test. Both install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install bytecode run test lint bench readme diagram check-deploy clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,models]'
	touch $(STAMP)

install: $(STAMP)

# Every server and run worker imports these; this machine may set PYTHONDONTWRITEBYTECODE, which would leave
# each process to compile them again.
bytecode: install
	$(PY) -m compileall -q orchestrator api model_server constellation_cli

run: bytecode
	$(PY) scripts/sample_data.py
	$(PY) scripts/sample_models.py
	$(PY) -m constellation_cli.link
	$(PY) scripts/stack.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # what it checks, and how strictly: [tool.mypy] in pyproject.toml

# Test files run in parallel, each whole on one worker (module fixtures such as a stack are started once);
# TEST_WORKERS=0 runs them in this process. The slow tests (a load test) run after them, alone on the machine.
TEST_WORKERS ?= 2
test: lint bytecode
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"
	$(PY) -m pytest -m slow

bench: install
	$(PY) bench/run.py
	$(PY) bench/data_plane.py
	$(PY) bench/inference.py
	$(PY) bench/comparison.py

readme: install
	$(PY) scripts/op_reference.py --write README.md

# The Compose files, Dockerfiles and Kubernetes manifests, checked without a Docker engine.
check-deploy:
	$(PYTHON) scripts/check_deploy.py

diagram: diagram.png

diagram.png: diagram.dot
	dot -Tpng -Gdpi=100 diagram.dot -o diagram.png

clean:
	rm -rf .dagster .artifacts .pytest_cache
