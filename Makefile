# Every target creates .venv on first use and installs the project (with its dev extra) into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv compile test lint typecheck contracts unit up bench clean

venv: $(STAMP) compile

# Installing also compiles the hot-path modules with mypyc (setup.py; ZONEGATE_COMPILE=0 skips it).
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(COMPILED)

# A compiled module is a .so beside its .py and is imported first: after an edit to one of the
# hot-path modules (services/zonegate/compiled.py names them) rebuild them, or the edit is not
# what runs. The test suite refuses to start on a stale build.
HOT_PATH := $(shell sed -n 's/^    "zonegate\.\(.*\)",$$/\1/p' services/zonegate/compiled.py | tr . / | sed 's|.*|services/zonegate/&.py|')
COMPILED := $(VENV)/.compiled

compile: $(COMPILED)

$(COMPILED): $(HOT_PATH) services/zonegate/compiled.py | $(STAMP)
	$(BIN)/python setup.py --quiet build_ext --inplace
	@# A source edited back to what was built compiles to the same objects, so the build keeps
	@# the old files and times; they are current now, and the stale check goes by time.
	find services -name '*.so' -exec touch {} +
	touch $(COMPILED)

lint: venv
	$(BIN)/ruff check services tests ops
	$(BIN)/ruff format --check services tests ops

typecheck: venv
	$(BIN)/mypy

contracts: venv
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest

# The whole suite: style, types, architecture contracts, then every test (slow ones included).
test: lint typecheck contracts unit

# The local stack: embedded mTLS NATS and PostgreSQL, a CP (:8001), DPs in zones a (:8000) and b (:8010),
# a demo upstream and the sample config; state in .zonegate/, Ctrl-C stops it all. Options: zonegate up --help.
up: venv
	$(BIN)/zonegate up

# Benchmarks print a table against a baseline measured in the same run; they never gate a test.
bench: venv
	$(BIN)/python ops/bench/declarative_bench.py
	$(BIN)/python ops/bench/router_bench.py
	$(BIN)/python ops/bench/store_bench.py
	$(BIN)/python ops/bench/admin_bench.py
	$(BIN)/python ops/bench/proxy_bench.py
	$(BIN)/python ops/bench/plugins_bench.py
	$(BIN)/python ops/bench/plugins_python_cost.py
	$(BIN)/python ops/bench/hybrid_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build
	find services -name '*.so' -delete
