# Two commands for a fresh clone (see README):
#   make all    set up .venv, build every figure of the embedded default, then Snakemake's report
#   make test   set up .venv and run the test suite
# Both are idempotent. PROFILE=local-gpu or PROFILE=slurm picks another profile.

PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= local
BIN := $(VENV)/bin
STAMP := $(VENV)/.llr-installed
PROFILES := local local-gpu slurm

.PHONY: all setup test dry-run clean-results
all: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --profile $(PROFILE) all
	@# Snakemake's own report: every figure and table with its caption (workflow/report/*.rst).
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --profile $(PROFILE) --report results/report.html

setup: $(STAMP) $(PROFILES)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-compile -e '.[test]'
	@# pip byte-compiles on one core; compileall on every core halves that (about 45 s
	@# instead of 90 here). Files it cannot compile (templates, Python 2 examples inside
	@# some packages) are skipped, as pip skips them.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $(STAMP)

# Snakemake looks a profile name up in the working directory: link ours there.
$(PROFILES):
	ln -sfn profiles/$@ $@

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

dry-run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake -n all

clean-results:
	rm -rf results logs benchmarks/out .snakemake
