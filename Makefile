# me2-scheduler — the seed's verbs (init, gen-rpc, build, run-dev, test, clean)
# plus demo, lint, bench and chaos.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
DURATION ?= 0

.PHONY: init gen-rpc build run-dev test lint demo bench chaos clean system

$(STAMP): pyproject.toml devkit/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' -e ./devkit
	touch $(STAMP)

system:
	@scripts/ensure-system.sh

init: system $(STAMP)

gen-rpc: $(STAMP)
	$(PY) scripts/gen_protos.py

# build/ is emptied first: setuptools would add what an earlier build left there.
build: $(STAMP)
	rm -rf build
	$(PY) -m pip wheel --no-deps -q -w dist .

run-dev: init
	$(VENV)/bin/me2-scheduler run -f etc/scheduler-dev.yaml

test: init
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: init
	$(PY) scripts/demo.py --duration $(DURATION)

bench: init
	$(VENV)/bin/me2-dev bench

# The reliability proof: 5 minutes of faults on 2,000 avatars, then the audit.
chaos: init
	$(VENV)/bin/me2-dev chaos --report docs/RELIABILITY.md $(CHAOS_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis .run
	find . -name __pycache__ -prune -exec rm -rf {} +
