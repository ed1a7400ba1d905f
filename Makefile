# Warren — the two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench fmt clean compile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(INGRESS_BUILD)  ## create .venv, install Warren (its ingress compiled), run the demo
	$(BIN)/warren demo

# The ingress compiled by mypyc, in place, when a C compiler is there (else it runs as Python):
# again whenever one of its modules changes. See src/warren/ingress/native.py.
INGRESS_BUILD := src/warren/ingress/compiled.stamp
$(INGRESS_BUILD): $(VENV)/.installed $(wildcard src/warren/ingress/*.py)
	$(BIN)/python -c 'import mypyc' 2>/dev/null || $(BIN)/pip install --quiet 'mypy>=1.10'
	$(BIN)/python src/warren/ingress/native.py compile

compile: $(INGRESS_BUILD)  ## compile the ingress (mypyc), if anything changed

test: $(VENV)/.dev-installed $(INGRESS_BUILD)  ## install the dev extras, compile the ingress, run the whole suite
	$(BIN)/pytest
	@# The ingress's own tests once more, on its source: they pass both ways.
	WARREN_PURE=1 $(BIN)/pytest -q -p no:cacheprovider tests/integration/test_ingress.py tests/integration/test_tls.py tests/unit/test_native.py tests/unit/test_path_routing.py tests/unit/test_ingress_counters.py tests/unit/test_dechunker.py tests/property/test_response_head_props.py

lint: $(VENV)/.dev-installed  ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(VENV)/.dev-installed $(INGRESS_BUILD)  ## benchmarks; figures in bench/README.md
	$(BIN)/python -m bench

fmt: $(VENV)/.dev-installed
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f src/*.so src/warren/ingress/*.so $(INGRESS_BUILD)
