# Two commands do all set-up: `make demo` and `make test`.
# The virtual environment is cached outside the clone, keyed on pyproject.toml,
# so a fresh clone on the same machine reuses it.
PYTHON ?= python3
HASH := $(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
VENV ?= $(HOME)/.cache/moesim/venv-$(HASH)
PY := $(VENV)/bin/python
DEMO_OUT ?= out/demo

.PHONY: demo test probes mutants test-gpu bench fidelity venv dev clean

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

# Curated mutation probes (bench/mutants/probes.yaml): each planted bug must fail one of its tests.
# .ci/run runs it after `make test`; a survivor or a probe whose code moved fails the build.
probes: $(VENV)/.dev
	$(PY) -m bench.mutants.probes

# Mutation testing with mutmut over the modules that decide results (outside CI: slow).
# Writes bench/MUTANTS.md; MUTANTS_ONLY=bounds,cost_model limits the modules.
mutants: $(VENV)/.dev
	$(PY) -m bench.mutants.run_mutmut $(if $(MUTANTS_ONLY),--only $(MUTANTS_ONLY),)

# On a CUDA host: real Triton, CUDA torch and NVML, no TRITON_INTERPRET; every `gpu` test must run
# (MOESIM_REQUIRE_GPU=1 turns their skips into failures). The environment is $(VENV)-gpu with the
# gpu extra from PyPI (CUDA torch), or GPU_PY=python3 for one that already has CUDA torch.
GPU_VENV ?= $(VENV)-gpu
GPU_PY ?= $(GPU_VENV)/bin/python
$(GPU_VENV)/.gpu:
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q -e ".[dev,gpu]"
	touch $@

test-gpu: $(if $(filter $(GPU_VENV)/bin/python,$(GPU_PY)),$(GPU_VENV)/.gpu,)
	env -u TRITON_INTERPRET MOESIM_REQUIRE_GPU=1 PYTHONPATH=$(CURDIR) $(GPU_PY) -m pytest -q -p no:cacheprovider -rs tests/kernels

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
