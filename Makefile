# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medattn-installed
TESTSTAMP := $(VENV)/.medattn-test-installed

.PHONY: demo test install clean

# constraints.txt holds the exact versions the suite and the demo were run with (pyproject.toml: ranges).
# The demo needs medattn alone; the suite adds the test extra (linters, docs site, Quantus, pytest).
# The demo's install skips byte-compiling every installed file (--no-compile: 51 s instead of 92 s on
# 2 cores; the one demo process compiles what it imports, about 11 s). The suite starts hundreds of
# Python processes, so its install compiles the whole venv once; pip also ignores files that do not
# compile (third-party test fixtures never imported), hence the `|| true`.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e .
	@touch $(STAMP)

$(TESTSTAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	@touch $(TESTSTAMP)

install: $(TESTSTAMP)

demo: $(STAMP)
	$(VENV)/bin/medattn demo

# Lint habits first (ruff, ruff format, the import-linter layers in pyproject.toml), then the docs site
# (mkdocs.yml; --strict fails on a broken link, anchor or docstring; built offline into the ignored site/),
# then the suite, one pytest-xdist worker per core; a file's tests stay on one worker, so its module
# fixtures run once.
test: $(TESTSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(PY) -m pytest -q -n auto --dist loadfile

clean:
	rm -rf mlruns mlflow.db optuna.db demo_data .pytest_cache site
