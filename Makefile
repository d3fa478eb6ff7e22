# Everyday targets. `make demo` and `make test` work on a fresh machine: they create (or reuse)
# the virtual environment in .venv and install every Python and npm package they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := .tools/.installed-stamp
PEER_VENVS := .bench/peers
PEERS := fastmcp contextforge

.PHONY: demo test test-fast lint bench bench-peers node chromium redis-server haproxy rsyslog clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,demo]"
	touch $(STAMP)

$(NODE_STAMP): scripts/install-node-tools.sh
	bash scripts/install-node-tools.sh

node: $(NODE_STAMP)

chromium:
	bash scripts/install-debian-package.sh chromium /usr/bin/chromium

redis-server:
	bash scripts/install-debian-package.sh redis-server /usr/bin/redis-server

MULTIARCH = $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu')")

# The syslog receiver the audit export tests send to (tests/support/log_receivers.py); TLS needs its openssl module.
rsyslog:
	bash scripts/install-debian-package.sh rsyslog /usr/sbin/rsyslogd
	bash scripts/install-debian-package.sh rsyslog-openssl /usr/lib/$(MULTIARCH)/rsyslog/lmnsd_ossl.so

haproxy:
	bash scripts/install-debian-package.sh haproxy /usr/sbin/haproxy

demo: $(STAMP)
	$(VENV)/bin/bastion demo

test: $(STAMP) $(NODE_STAMP) chromium redis-server haproxy rsyslog
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# `make bench BASELINE=<git ref>` also measures that commit's Bastion and compares it with this one.
bench: $(STAMP) haproxy
	bash scripts/install-debian-package.sh wrk /usr/bin/wrk
	$(PY) benchmarks/run.py$(if $(BASELINE), --baseline $(BASELINE))

# Each peer of `make bench-peers` in its own virtual environment, from the requirement file that pins it.
$(PEER_VENVS)/%/.installed-stamp: benchmarks/peers/%.txt
	test -x $(PEER_VENVS)/$*/bin/python || $(PYTHON) -m venv $(PEER_VENVS)/$*
	$(PEER_VENVS)/$*/bin/python -m pip install -q --disable-pip-version-check -r $<
	touch $@

# Bastion against the MCP gateways a user would pick instead; `make bench-peers QUICK=1` is a smoke test.
bench-peers: $(STAMP) $(PEERS:%=$(PEER_VENVS)/%/.installed-stamp)
	bash scripts/install-debian-package.sh wrk /usr/bin/wrk
	$(PY) benchmarks/peers.py$(if $(QUICK), --quick)

clean:
	rm -rf $(VENV) .tools .bench .bastion .pytest_cache .mypy_cache .ruff_cache
