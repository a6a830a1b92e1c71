# rrg: the two commands a fresh machine needs (see README.md).
#   make test   install everything, then run the whole test suite
#   make serve  install everything, build the demo data and bundle if missing, then serve
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv from PATH, else the copy pip installs (`python3 -m uv` works wherever pip put its binary).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
EXTRAS := --extra cpu --extra dev
PYTEST_ARGS ?=
ENGINE ?= vllm
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install test serve demo-data bench lint clean

help:
	@echo "make test   - install (uv, cpu + dev extras) and run every test"
	@echo "make serve  - install, build the demo data and demo bundle if missing, serve on :8000"
	@echo "make bench  - every benchmark in bench/ (labeler and scoring speed, retrieval, API latency)"
	@echo "make lint   - ruff"

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		{ echo "installing uv with pip"; python3 -m pip install --quiet uv; }
	$(UV) sync --frozen $(EXTRAS)
	@# The page's browser test drives Debian's Chromium: add it where we may, else say so.
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Chromium for the browser test (Debian's chromium)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
				|| echo "warning: could not install Chromium; the browser test will fail (RRG_SKIP_BROWSER=1 skips it)"; \
		else \
			echo "warning: no /usr/bin/chromium; the browser test will fail (RRG_SKIP_BROWSER=1 skips it)"; \
		fi; }
	@# METEOR (rrg-eval) runs coco-caption's Java jar: add a Java runtime where we may, else say so.
	@command -v java >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing a Java runtime for METEOR (default-jre-headless)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null \
				|| echo "warning: could not install Java; rrg-eval will report METEOR as not computed"; \
		else \
			echo "warning: no java on PATH; rrg-eval will report METEOR as not computed (install a JRE 8+)"; \
		fi; }

test: install
	$(UV) run --frozen $(EXTRAS) pytest $(PYTEST_ARGS)

demo-data: install
	$(UV) run --frozen $(EXTRAS) rrg data demo

# Builds the demo data and the demo bundle in the cache ($$RRG_CACHE, default ~/.cache/rrg) if missing.
serve: install
	$(UV) run --frozen $(EXTRAS) rrg serve --engine $(ENGINE) --host $(HOST) --port $(PORT)

# Every benchmark in bench/, their tables collected in bench/results.md (progress goes to the terminal).
bench: install
	@{ echo "# rrg benchmarks"; echo; echo "Written by \`make bench\` on $$(date -u +%Y-%m-%d) on $$(nproc) cores."; } > bench/results.md.partial
	@for script in bench/*.py; do \
		echo "make bench: $$script"; \
		{ echo; echo "## $$script"; echo; $(UV) run --frozen $(EXTRAS) python $$script; } >> bench/results.md.partial || exit 1; \
	done
	@mv bench/results.md.partial bench/results.md && echo "make bench: wrote bench/results.md"

lint: install
	$(UV) run --frozen $(EXTRAS) ruff check .

clean:
	rm -rf .pytest_cache .ruff_cache build dist
