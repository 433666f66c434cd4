# Two entry points, both building the pinned environment in .venv first:
#   make reports   regenerate every report in reports/ (the committed numbers)
#   make test      run the test suite
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.ready: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c requirements.lock -e ".[test,dask,frameworks]"
	touch $@

.PHONY: reports test
reports: $(VENV)/.ready
	$(VENV)/bin/precision-lab run all --profile full --out reports
	cp reports/tolerance/tolerance.json precision_lab/analysis/tolerance.json  # precision_lab.tolerance

test: $(VENV)/.ready
	$(PY) -m pytest -q
