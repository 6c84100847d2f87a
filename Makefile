# vnode's entry points. `make test` is the README's test command and what CI (.ci/run) runs.
PYTHON ?= python3

.PHONY: setup test test-unit lint

# Idempotent: Debian packages, `pip install -e '.[test]'`, cached Kubernetes binaries.
setup:
	PYTHON=$(PYTHON) hack/setup

# Everything: the static checks, unit tests and integration tests against the real testbed (brought up
# by the fixture).
test: setup
	$(MAKE) --no-print-directory lint PYTHON=$(PYTHON)
	$(PYTHON) -m pytest tests

# Static checks (a few seconds): ruff over everything, mypy --strict over the shipped packages.
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# The fast unit suite alone; needs no testbed.
test-unit:
	$(PYTHON) -m pytest -m "not integration" tests

# Benchmarks, not tests: 100/1000/5000-pod bursts on a stub plugin, then a real-SLURM run (needs the
# testbed; 4 min at load 1-3 here, up to 30 min on a busy machine). Writes bench/results/<stamp>/, bench/plots/*.png and BENCHMARKS.md.
.PHONY: bench
bench: setup
	$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[bench]'
	$(PYTHON) -m bench.run $(BENCH_ARGS)

# The README's first command: the testbed, vnode's SLURM plugin and agent, an example pod offloaded to
# SLURM, then kubectl get/logs/exec on it; everything it started is stopped at the end. KEEP=1 leaves
# it all running (`hack/demo stop` stops it later). Logs and configs in /tmp/vnode-demo.
# Its setup builds only the default Kubernetes version: the demo never uses 1.36 or helm.
.PHONY: demo
demo:
	PYTHON=$(PYTHON) hack/setup --default-only
	$(PYTHON) hack/demo $(if $(filter-out 0 no false,$(KEEP)),--keep)
