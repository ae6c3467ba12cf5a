# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-torch lint bench bench-serve clean java chromium proto readme-kinds registry

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install only when the project definition changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[cpu,dev,serve,spark,images]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py

test: $(VENV)/.installed $(VENV)/.installed-torch java chromium registry
	$(PY) -m pytest -q

# PyTorch for the backend tests (marker `torch`, skipped where torch is not installed). PyPI's
# torch is a CUDA build of several GB; this pins 2.13.0, which pip takes from the CPU wheel
# the machine provides (pip's find-links) instead.
$(VENV)/.installed-torch: $(VENV)/.installed
	$(PIP) install --quiet 'torch==2.13.0'
	touch $@

# Only the PyTorch backend's tests.
test-torch: $(VENV)/.installed $(VENV)/.installed-torch
	$(PY) -m pytest -q -m torch

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bundle tests examples benchmarks
	$(VENV)/bin/ruff format --check bundle tests examples benchmarks

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[cpu,dev,serve,spark,images,bench]'
	touch $@

# PyTorch too: the backends benchmark measures every Keras backend installed.
bench: $(VENV)/.installed-bench $(VENV)/.installed-torch
	$(PY) benchmarks/run.py

# The serving benchmark alone (bundle serve vs MLServer vs mlflow serve), about 30 min on 2
# cores: run it on an otherwise idle machine. Its progress goes to benchmarks/serve_bench.log,
# its figures to benchmarks/RESULTS.md (Serving); the targets of issue 18 are printed.
bench-serve: $(VENV)/.installed-bench
	$(PY) benchmarks/run.py serve > benchmarks/serve_bench.log 2>&1 \
	  || { tail -30 benchmarks/serve_bench.log; exit 1; }
	@grep -A6 "^Targets at concurrency 32" benchmarks/serve_bench.log || true

# The gRPC server's message classes, from bundle/serve/_proto/open_inference.proto.
proto: $(VENV)/.installed
	$(PY) bundle/serve/_proto/generate.py

# The Spark tests (tests/test_spark.py) need a Java runtime: install one when it is missing
# and apt-get can (root on Debian/Ubuntu); a no-op when `java -version` works.
java:
	@java -version >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "java not found: installing default-jre-headless"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      default-jre-headless >/dev/null; } \
	      || echo "installing a Java runtime failed: the Spark tests will skip"; \
	  else \
	    echo "java not found and apt-get unavailable (or not root): the Spark tests will skip"; \
	  fi; \
	}

# The drift report test (tests/test_drift_html.py) opens the HTML report in a real headless
# Chromium: install Debian's chromium + chromium-driver when missing and apt-get can (root
# on Debian/Ubuntu); a no-op when both are on PATH.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "chromium not found: installing chromium chromium-driver"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; } \
	      || echo "installing Chromium failed: the browser test of the drift report will skip"; \
	  else \
	    echo "chromium not found and apt-get unavailable (or not root): the browser test will skip"; \
	  fi; \
	}

# The README's table of supported scikit-learn classes, regenerated from the registry of
# kinds (tests/test_kinds.py fails when they differ).
readme-kinds: $(VENV)/.installed
	$(PY) -m bundle.steps.registry README.md

# The OCI registry tests (tests/test_oci.py) start Debian's docker-registry (CNCF
# Distribution) on 127.0.0.1: install it when missing and apt-get can (root on Debian/Ubuntu);
# a no-op when `docker-registry` is on PATH. The package's own service is not started.
registry:
	@command -v docker-registry >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "docker-registry not found: installing it"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends docker-registry >/dev/null; } \
	      || echo "installing docker-registry failed: the OCI registry tests will skip"; \
	  else \
	    echo "docker-registry not found and apt-get unavailable (or not root): the OCI registry tests will skip"; \
	  fi; \
	}

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
