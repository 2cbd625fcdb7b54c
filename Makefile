# The two commands: `make run` serves the demo on the embedded default; `make test` runs every test.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is rebuilt from the lock whenever the lock or pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.lock | sha1sum | cut -c1-12)
PIP := $(BIN)/pip install -q --disable-pip-version-check
# uv resolves the locks (requirements/README.md): every platform, hashes of every file.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 --native-tls

.PHONY: install run test lint lock lock-upgrade bench-token image-smoke mutation

$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Exactly the locked versions (their hashes checked), and nothing else: pip sync semantics.
	$(PIP) --require-hashes --no-deps -r requirements/dev.lock
	$(PIP) --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	touch node_modules/.installed

run: install
	$(BIN)/enrich migrate
	$(BIN)/enrich demo
	$(BIN)/enrich serve

test: install node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile

lock: install
	$(LOCK) pyproject.toml -o requirements/service.lock
	$(LOCK) pyproject.toml requirements/build.in --extra dev -c requirements/service.lock \
		-o requirements/dev.lock

lock-upgrade: install
	$(LOCK) --upgrade pyproject.toml -o requirements/service.lock
	$(LOCK) --upgrade pyproject.toml requirements/build.in --extra dev \
		-c requirements/service.lock -o requirements/dev.lock

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy app
	$(BIN)/lint-imports

bench-token: install
	$(BIN)/python bench/token_bench.py

# Mutation testing of the modules where a silent mistake costs most (docs/mutation.md): every
# group, or MODULES="app/events/service.py ..." for the groups of those modules; RETEST=1 tests
# the surviving mutants again; MUTANTS="'*EventRepository*claim*' ..." only those mutants (of
# groups run before). Two workers at the lowest priority; not part of make test.
MODULES ?=
RETEST ?=
MUTANTS ?=
mutation: install
	nice -n 19 $(BIN)/python tests/mutation/run.py --max-children 2 $(if $(RETEST),--retest) \
		$(foreach m,$(MUTANTS),--mutants $(m)) $(MODULES)

# The container image built on a Debian base and run as the compose stack, with a smoke against
# it (README: "The image, built and run"). As root; not part of make test (several minutes cold).
image-smoke: install
	PYTHON=$(abspath $(BIN)/python) bash deploy/image-smoke.sh
