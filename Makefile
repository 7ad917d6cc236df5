# Two commands do all set-up: `make demo` and `make test`.
# The virtual environment is cached outside the clone, keyed on pyproject.toml,
# so a fresh clone on the same machine reuses it.
PYTHON ?= python3
HASH := $(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
VENV ?= $(HOME)/.cache/moesim/venv-$(HASH)
PY := $(VENV)/bin/python
DEMO_OUT ?= out/demo

.PHONY: demo test bench fidelity venv dev clean

$(VENV)/.core:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	# torch's CPU build comes from the local wheel; asking for it by version keeps pip off the CUDA build.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.core
dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(PY) -m pip install -q -e . >/dev/null
	$(PY) -m moesim.demo --out $(DEMO_OUT)

test: $(VENV)/.dev
	$(PY) -m pip install -q --no-deps -e . >/dev/null
	TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.dev
	$(PY) -m pip install -q --no-deps -e . >/dev/null
	$(PY) -m bench.run_all

# fit the phone profile on the qwen run only, predict every gemma run, write docs/fidelity.md
# (runs from the source tree with the venv's interpreter; no editable install is touched)
SHARED ?= ../shared
fidelity: $(VENV)/.dev
	PYTHONPATH=$(CURDIR) $(PY) -m moesim.runs.fidelity --data $(SHARED)/traces/bigmoeonedge

clean:
	rm -rf out build *.egg-info
