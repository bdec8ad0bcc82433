# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist
export HF_HUB_OFFLINE := 1

.PHONY: demo test data browser clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: a later package must not pull a CUDA build (several GB) from the registry. pyproject.toml
	# only bounds torch from below, so the next install keeps this wheel (tests/test_packaging.py checks the bound).
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist; without apt (or root) `paris demo --data DIR` still works.
data:
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	  echo "warning: could not install dataset-fashion-mnist; install it or pass --data DIR to paris demo"

# Debian's Chromium, for the browser test of `paris serve`'s page (tests/test_serve.py drives it with Playwright).
browser:
	@test -x /usr/bin/chromium || \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "warning: could not install chromium; the browser test of paris serve will be skipped"

demo: $(VENV)/.installed data
	$(VENV)/bin/paris demo

# One worker per core, each test file whole on one worker (its module fixtures built once): many tests wait on
# subprocesses they kill and resume, so two workers on two cores take far less than one.
test: $(VENV)/.installed data browser
	$(VENV)/bin/pytest -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs
