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

# The suite in two passes: what can share the machine on two workers (each with its own PostgreSQL and broker),
# then, one at a time, the tests marked `alone`, which time something or load both cores themselves.
test: install
	$(VENV)/bin/pytest -n 2 --dist loadfile -m "not alone"
	$(VENV)/bin/pytest -m alone
	@echo "make test: both passes passed; between them they ran the whole suite (the first leaves out the tests marked alone, the second runs only those)"
