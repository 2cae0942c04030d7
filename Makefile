# The two commands the README promises: `make demo` and `make test`.
# Both create .venv when it is missing and install the pinned dependencies into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $(STAMP)

# The import contracts first (pyproject.toml [tool.importlinter]): a layer crossed fails fast.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/mlrelay demo

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
