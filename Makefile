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
	$(PY) -m precision_lab.data.trained build/digits_logits.npz  # real classifier logits
	$(VENV)/bin/precision-lab analyze build/digits_logits.npz --out reports/analyze_digits \
		--formats float16 bfloat16 float32 float64 --quiet
	$(VENV)/bin/precision-lab run all --profile full --out reports
	cp reports/tolerance/tolerance.json precision_lab/analysis/tolerance.json  # precision_lab.tolerance
	$(VENV)/bin/precision-lab run all --profile quick --out build/quick-reports --quiet
	$(PY) -m precision_lab.experiments._timings reports build/quick-reports

test: $(VENV)/.ready
	$(VENV)/bin/ruff check precision_lab experiments tests
	$(PY) -m pytest -q
