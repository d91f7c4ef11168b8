# py9pfuse: `make install` sets up this machine, `make test` runs the test suite.
# Debian 12; the apt steps need root (sudo is used when it is there and we are not root).

PYTHON ?= python3
VENV   ?= .venv
PEERS  ?= .venv-peers
PREFIX ?= /usr/local
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

# What py9pfuse needs to build pyfuse3 and to mount; what the tests need for real peers.
APT_RUNTIME := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv groff-base
APT_PEERS   := diod nfs-ganesha nfs-ganesha-vfs socat munge iproute2 util-linux

.PHONY: install apt test test-deps demo bench man fuzz clean

install: $(VENV)/.installed
	@# mount(8) runs helpers with a fixed PATH, so the command must be in $(PREFIX)/bin.
	$(SUDO) ln -sf $(CURDIR)/$(VENV)/bin/py9pfuse $(PREFIX)/bin/py9pfuse
	@echo "py9pfuse installed: $$($(PREFIX)/bin/py9pfuse --version)"

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory apt PKGS="$(APT_RUNTIME)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

test-deps: $(VENV)/.installed $(PEERS)/.installed
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PEERS)"

$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q p9fs aio9p
	touch $@

# Installs only what is missing, so a second `make install` is quick and offline.
apt:
	@missing=$$(for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The peers are required here: a missing one is a failure, not a skip.
test: test-deps
	PY9PFUSE_REQUIRE_PEERS=1 PY9PFUSE_PEERS_PYTHON=$(CURDIR)/$(PEERS)/bin/python \
	  $(VENV)/bin/python -m pytest -ra

# The bundled 9P server, in memory, mounted on $(DEMO); `fusermount3 -u $(DEMO)` ends it.
DEMO ?= /tmp/py9pfuse-demo
demo: install
	@if mountpoint -q $(DEMO); then fusermount3 -u $(DEMO); fi
	$(VENV)/bin/py9pfuse demo $(DEMO)
	ls -l $(DEMO)
	cat $(DEMO)/README

# Session throughput against diod and py9p, then the mount against its ceilings.
bench: test-deps
	PY9PFUSE_PEERS_PYTHON=$(CURDIR)/$(PEERS)/bin/python $(VENV)/bin/python bench/session_bench.py
	PY9PFUSE_PEERS_PYTHON=$(CURDIR)/$(PEERS)/bin/python $(VENV)/bin/python bench/fuse_bench.py

man: man/py9pfuse.txt
man/py9pfuse.txt: man/py9pfuse.1
	groff -man -Tutf8 -P-c -P-b -P-u $< > $@
	@echo "rendered $@ (read it with: man -l $<)"

# A long fuzz run of the decoder (not part of `make test`): N inputs, default 1,000,000.
fuzz: $(VENV)/.installed
	$(VENV)/bin/python tests/fuzz_codec.py $(N)

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info man/py9pfuse.txt .pytest_cache .hypothesis
