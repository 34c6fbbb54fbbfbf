# cagcl-mini: `make tutorial` runs every notebook on the embedded data; `make test` runs every test.
# Both create .venv and install everything on a machine that has only python3 and make.
#
# TORCH_SPEC picks the torch wheel. Users get the normal one (CUDA on Linux); CI and CPU-only
# machines can ask for a CPU build, e.g. `make test TORCH_SPEC=torch==2.13.0` (.ci/run does).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export CAGCL_MINI_HOME ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install system-deps tutorial test imports unit nbval browser-test lab lint format clean

install: $(STAMP) system-deps

# Debian's chromium for the real-browser test (tests/browser): installed with apt when we are root
# and it is missing; without it that test skips and says why. Playwright never downloads a browser.
system-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
			echo "chromium could not be installed: the browser test will skip"; \
		else echo "no chromium (install it as root: apt-get install -y chromium): the browser test will skip"; fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cagcl-mini)"
	touch $@

# both hospitals up front: site A for every notebook, site B for 06's transfer (a notebook would
# otherwise write it in the middle of a lesson)
tutorial: $(STAMP)
	$(BIN)/cagcl-mini make-data
	$(BIN)/cagcl-mini make-data --site B
	$(BIN)/cagcl-mini notebooks --out runs/tutorial

# `make test`: the import contracts, then the unit tests and nbval over every notebook in one
# pytest run spread over every core (pytest-xdist; a file, so a notebook's cells, stays on one
# worker; one torch thread per worker). The notebooks go first: they are the longest files.
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --dist loadfile
NBVAL = --nbval-lax --nbval-current-env --nbval-cell-timeout=900
test: system-deps imports
	tmp=$$(mktemp -d) && CAGCL_MINI_HOME=$$tmp OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q \
		-p no:cacheprovider $(XDIST) $(NBVAL) notebooks/ tests ; \
		rc=$$?; rm -rf $$tmp; exit $$rc

# The layer contracts of pyproject.toml ([tool.importlinter]): no upward imports, no cycles.
imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) tests

# nbval executes every notebook top to bottom in a fresh cache (lax: errors and asserts fail).
nbval: $(STAMP)
	tmp=$$(mktemp -d) && CAGCL_MINI_HOME=$$tmp OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q \
		-p no:cacheprovider $(XDIST) $(NBVAL) notebooks/ ; \
		rc=$$?; rm -rf $$tmp; exit $$rc

# JupyterLab in a real headless browser: notebook 00 runs and its slice viewer draws (also in `unit`).
browser-test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -rs tests/browser

# Containers and course servers often run as root; JupyterLab refuses that without --allow-root.
# The contents manager gives each notebook the installed kernel's language_info, so opening one
# does not mark it modified (cagcl_mini/tutorial/lab.py).
LAB_CONTENTS = --ServerApp.contents_manager_class=cagcl_mini.tutorial.lab.TutorialContentsManager
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_CONTENTS) \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: imports
	$(BIN)/ruff check cagcl_mini data_download tests conftest.py
	$(BIN)/ruff format --check cagcl_mini data_download tests notebooks conftest.py

format: $(STAMP)
	$(BIN)/ruff check --fix cagcl_mini data_download tests conftest.py
	$(BIN)/ruff format cagcl_mini data_download tests notebooks conftest.py

clean:
	rm -rf $(VENV) .cache runs
