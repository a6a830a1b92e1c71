# rrg: the two commands a fresh machine needs (see README.md).
#   make test   install everything, then run the whole test suite
#   make serve  install everything, build the demo data if missing, then serve
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv from PATH, else the copy pip installs (`python3 -m uv` works wherever pip put its binary).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
EXTRAS := --extra cpu --extra dev
PYTEST_ARGS ?=

.PHONY: help install test serve demo-data lint clean

help:
	@echo "make test   - install (uv, cpu + dev extras) and run every test"
	@echo "make serve  - install, build the demo data set if missing, serve"
	@echo "make lint   - ruff"

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		{ echo "installing uv with pip"; python3 -m pip install --quiet uv; }
	$(UV) sync --frozen $(EXTRAS)

test: install
	$(UV) run --frozen $(EXTRAS) pytest $(PYTEST_ARGS)

demo-data: install
	$(UV) run --frozen $(EXTRAS) rrg data demo

serve: demo-data
	@echo ""
	@echo "rrg: the demo DATA set is built (synthetic phantom images; see its gallery.png)."
	@echo "rrg: serving (API + Gradio) is NOT implemented yet: it arrives with the end-to-end issue"
	@echo "     (train a demo bundle, draft, serve through vLLM). Nothing is being served."

lint: install
	$(UV) run --frozen $(EXTRAS) ruff check .

clean:
	rm -rf .pytest_cache .ruff_cache build dist
