# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and (re)installs only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test lint rules prometheus broker model-card clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Runtime only: what `pba run` and the demo need.
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

# Everything the test suite needs: runtime, training (torch CPU) and dev tools.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[train,dev]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(PY) -m consumer.demo

test: $(VENV)/.installed-dev lint rules
	$(PY) -m pytest

# Debian's prometheus package gives promtool and a real server for the integration test.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { echo "installing Debian's prometheus package (promtool, server) ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

rules: prometheus
	cd deploy/prometheus && promtool check rules pba-rules.yml && promtool test rules tests/*.yml

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m mypy schemas predictor consumer training

# Walk-forward evaluation of the shipped models -> docs/MODEL_CARD.md (tens of minutes).
model-card: $(VENV)/.installed-dev
	$(PY) -m training.evaluate --traces $(or $(PBA_TRACES_DIR),../shared/traces)

broker: $(VENV)/.installed-run
	$(VENV)/bin/pba broker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
