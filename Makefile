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

# The suite in two passes: what can share the machine on three workers (each with its own PostgreSQL and broker;
# much of a test's time is spent waiting on them, so a third worker fills it), handed out test by test,
# then, one at a time, the tests marked `alone`, which time something or load both cores themselves. The OpenAPI
# fuzz is marked alone only because pytest-xdist cannot tell its tests apart (one node id for all); it times
# nothing, so it runs beside the first pass, in a process of its own, its output shown when it is done. The second
# pass collects only the files that mark tests alone (4.5 s of the 13.5 it took to collect them all).
FUZZ := tests/test_openapi_fuzz.py
test: install
	@set -e; log=$$(mktemp); \
	$(VENV)/bin/pytest $(FUZZ) > $$log 2>&1 & fuzz=$$!; \
	$(VENV)/bin/pytest -n 3 --dist worksteal -m "not alone" || { kill $$fuzz 2>/dev/null; exit 1; }; \
	if wait $$fuzz; then tail -n 3 $$log; rm -f $$log; else cat $$log; rm -f $$log; exit 1; fi
	$(VENV)/bin/pytest -m alone $$(grep -l "mark.alone" tests/test_*.py | grep -v $(FUZZ))
	@echo "make test: both passes passed; between them they ran the whole suite (the first leaves out the tests marked alone and runs the OpenAPI fuzz beside it, the second runs the rest of those marked alone)"
