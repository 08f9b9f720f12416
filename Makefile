# Every check has one entry point here; CI (.ci/run) calls the same targets.
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTHON ?= python3
# The least line coverage `make test` accepts: a few points under what the suite measures.
COVERAGE_FLOOR ?= 85
# Helm, to render and lint deploy/helm/lepton (see the helm target below).
HELM_VERSION ?= v4.3.2
# Jaeger v2, the trace backend of tests/tracing/ (see its target below); the Go
# module's versions are v1.x, its cmd/jaeger is Jaeger v2.
JAEGER_VERSION ?= v1.75.0
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

.PHONY: install constraints fmt generate format-check lint types test test-unit test-chaos check bench chaos demo demo-down clean

install: $(VENV)/.installed $(VENV)/.helm-$(HELM_VERSION) $(VENV)/.jaeger-$(JAEGER_VERSION) \
  $(VENV)/.java-built

# pyproject.toml gives ranges; constraints.txt the exact versions CI and developers run.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,local,bench]'
	touch $@

# Re-pins constraints.txt within pyproject.toml's ranges, keeping every pin that still fits;
# UPGRADE=1 moves each to the newest release its range allows. Lepton itself is left out
# ([local] names [server] of itself, which pip-compile would pin as this directory).
constraints: $(VENV)/.installed
	$(BIN)/pip-compile --quiet --all-extras --strip-extras --no-emit-index-url \
	  --no-emit-find-links --unsafe-package lepton-control-plane $(if $(UPGRADE),--upgrade) \
	  --output-file constraints.txt pyproject.toml

# Helm, which the tests of deploy/helm/lepton render and lint it with (tests/deploy/), built
# from the Go module proxy into the virtual environment: no prebuilt binary can be fetched
# here. The first build takes a few minutes; Go's caches keep later ones short.
$(VENV)/.helm-$(HELM_VERSION): | $(VENV)/.installed
	GOBIN=$(abspath $(BIN)) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	touch $@

# The Java parts the tests build and run (the Connect converter and its worker and JDBC sink,
# the Java examples, the schema registry and its serializer), all from Maven Central:
# fetched and built once here, so that a cold local Maven repository is not charged to a
# test's timeout. The tests build them again (offline) with their own tests included.
JAVA_BUILDS := deploy/connect/pom.xml examples/pom.xml tests/registry/server/pom.xml \
  tests/registry/serde/pom.xml
JAVA_FETCHES := deploy/connect/worker/pom.xml deploy/connect/jdbc/pom.xml
MVN ?= mvn -B -q
$(VENV)/.java-built: $(JAVA_BUILDS) $(JAVA_FETCHES) | $(VENV)/.installed
	for pom in $(JAVA_BUILDS); do $(MVN) -f $$pom package -DskipTests || exit 1; done
	for pom in $(JAVA_FETCHES); do $(MVN) -f $$pom dependency:resolve || exit 1; done
	touch $@

# Jaeger (in-memory storage, OTLP receiver, query API), which tests/tracing/ runs as a real
# trace backend, built from the Go module proxy into the virtual environment like Helm.
# `go install pkg@version` refuses its module (it has replace directives): it is built as
# the tool of a throwaway module instead. The first build takes several minutes.
$(VENV)/.jaeger-$(JAEGER_VERSION): | $(VENV)/.installed
	rm -rf $(VENV)/.jaeger-build && mkdir -p $(VENV)/.jaeger-build
	cd $(VENV)/.jaeger-build && $(GO) mod init lepton.invalid/jaeger-build \
	  && $(GO) get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$(JAEGER_VERSION) \
	  && GOBIN=$(abspath $(BIN)) $(GO) install tool
	rm -rf $(VENV)/.jaeger-build
	touch $@

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerates what is derived from schemas/: the event types and the golden vectors
# (a unit test and the pre-commit hooks fail while either is stale).
generate: install
	$(BIN)/python -m lepton.contract.typegen --write
	$(BIN)/lepton contract vectors --write

format-check: install
	$(BIN)/ruff format --check .

lint: install
	$(BIN)/ruff check .

types: install
	$(BIN)/mypy

# Each run's temporary files (the test stack's data among them) in a directory of this
# checkout's own, not in pytest's shared /tmp/pytest-of-<user>, where any other pytest run
# on the machine deletes all but the newest three runs' directories: a running stack's
# included. Under /tmp rather than in the checkout: PostgreSQL's socket path must stay
# short. pytest empties it at the start of each run.
PYTEST_TMP ?= $(or $(TMPDIR),/tmp)/lepton-tests-$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)

# Starts its own Kafka and PostgreSQL unless LEPTON_KAFKA_BOOTSTRAP and
# LEPTON_DATABASE_URL name existing servers.
test: install
	$(BIN)/pytest --basetemp=$(PYTEST_TMP)/test --cov --cov-fail-under=$(COVERAGE_FLOOR)

# No servers: what a change to the code alone needs, in about a minute.
test-unit: install
	$(BIN)/pytest --basetemp=$(PYTEST_TMP)/unit tests/unit

# The chaos matrix's short form against a private stack, its targets asserted
# (tests/chaos): about a quarter of an hour on two cores.
test-chaos: install
	$(BIN)/pytest --basetemp=$(PYTEST_TMP)/chaos -m chaos tests/chaos

check: format-check lint types test test-chaos

# Each benchmark prints a table and writes bench/results/<name>.json.
BENCHES ?= bus broker_requests scheduler_core scheduler_e2e ingest monitor trainer evaluator connect_sink \
  automl

bench: install
	$(BIN)/lepton stack up
	for name in $(BENCHES); do $(BIN)/python -m bench.$$name || exit 1; done

# The fault matrix (bench/chaos) against a private stack of its own: prints a table and
# writes bench/results/chaos.json. CHAOS_ARGS=--short is the CI form (one run of each fault).
CHAOS_ARGS ?=

chaos: install
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Stack up, services up, then `lepton demo`: each bundled example ingested, trained,
# evaluated and asked for a prediction, through the SDK as any client would.
demo: install
	$(BIN)/lepton stack up
	$(BIN)/lepton up
	$(BIN)/lepton demo

demo-down: install
	$(BIN)/lepton down
	$(BIN)/lepton stack down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage $(PYTEST_TMP)
	rm -rf deploy/connect/target examples/*/target tests/registry/*/target
