# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   set up .venv, install, run the default closed-loop reaching demo
#   make test   set up .venv, install, run the test suite
#   make lint   set up .venv, install, ruff (lint and format), mypy and the import-layer contract
# CI (.ci/run) runs both: make lint, then make test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo

.PHONY: demo test test-soak lint bench clean setup

setup: $(STAMP)

# Re-install only when the package metadata changes, so both targets are fast once set up.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# CPU wheel first: a bare torch requirement would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	@touch $(STAMP)

# The default demo twice: T=10 with the hand-tuned quadratic terminal, then T=10 ending in the
# shipped DVP value (models/iiwa_dvp.pt), each with its summary table and plots. Then what the
# value is for: on the 10 ms task (T=10 sees 0.1 s), T=10 + quadratic, T=10 + the shipped value
# and T=100 + quadratic on the same start and push, side by side (cost, error, solve time).
demo: $(STAMP)
	$(VENV)/bin/vmpc sim --config configs/iiwa_reach.yaml --out $(OUT)
	$(VENV)/bin/vmpc sim --config configs/iiwa_reach.yaml --terminal models/iiwa_dvp.pt --out $(OUT)-learned
	$(VENV)/bin/vmpc eval compare --config configs/iiwa_reach_short.yaml --value models/iiwa_dvp_short.pt --out $(OUT)-compare

# The layer contract (sim <- mpc <- learning <- vmpc) lives in pyproject.toml [tool.importlinter].
lint: $(STAMP)
	$(VENV)/bin/ruff check sim mpc learning vmpc tests
	$(VENV)/bin/ruff format --check sim mpc learning vmpc tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Two workers (pytest-xdist), one per core, then the tests marked `serial` alone: they compare
# wallclock tick rates between windows of one run, which a neighbouring test would skew.
# pytest exits 5 when it collects nothing; that is not a failure of the code under test.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not soak and not serial"; rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	  $(PY) -m pytest -q -m serial; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# The 60 s soak (vmpc bench soak: pushes, a wrench stream, swaps and a fuzzer against a wallclock
# run), deselected from `make test` by the `soak` marker.
test-soak: $(STAMP)
	$(PY) -m pytest -q -m soak

bench: $(STAMP)
	$(VENV)/bin/vmpc bench mpc

clean:
	rm -rf $(VENV) runs .pytest_cache
