# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?= -n 2

.PHONY: install demo test bench bench-soak bench-stream bench-console lint clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "Python 3.12+ is needed (found %s)" % sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install            ## install, then start the demo PMS behind the gateway
	$(BIN)/pms-gateway demo

test: install            ## the whole test suite (needs Redis, PostgreSQL, chromium; see .ci/run)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install           ## proxy benchmark (about 4 minutes); writes bench/RESULTS.md and README's summary
	$(BIN)/python bench/proxy_bench.py --write

bench-soak: install      ## gateway RSS over a soak at half its capacity (SOAK_MINUTES, default 10); writes bench/RESULTS.md
	$(BIN)/python bench/proxy_bench.py --soak $(or $(SOAK_MINUTES),10) --write

bench-stream: install    ## gateway peak RSS while 1 GiB goes up and 1 GiB down; writes bench/RESULTS.md
	$(BIN)/python bench/proxy_bench.py --stream --write

bench-console: install   ## console screens over 20M audit records in PostgreSQL (fill takes minutes; CONSOLE_BENCH_ARGS=--reuse keeps it)
	$(BIN)/python bench/console_bench.py --write $(CONSOLE_BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
