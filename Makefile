# Two entry points: `make run` (install, start everything on embedded defaults) and `make test`.
PY ?= python3
VENV := .venv

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install run test
install: $(VENV)/.installed

run: install
	$(VENV)/bin/skillcert up

test: install
	$(VENV)/bin/pytest
