# phaseloop entry points. `make run` and `make test` are the two commands of the README.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
E2E := e2e/scripts

.PHONY: help run test unit e2e chaos bench lint deny fmt crds deploy bins cluster-up cluster-down node-up node-down images

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# `make run` builds with the features the test build resolves (the tests enable kube's CEL
# validator), so that running after testing, or testing after running, compiles nothing again.
TEST_FEATURES := --features kube/cel

run: ## Run the operator on this host (starting the local control plane when no cluster is configured)
	@if [ -z "$$KUBECONFIG" ] && [ ! -f "$$HOME/.kube/config" ]; then \
	  bash $(E2E)/install-deps.sh && bash $(E2E)/build-e2e-bins.sh && bash $(E2E)/start-cluster.sh && \
	  eval "$$($(E2E)/env.sh)" && \
	  echo 'local control plane up; to use it from your shell: eval "$$(e2e/scripts/env.sh)"'; \
	fi && \
	kubectl apply -f crds/ && \
	$(CARGO) build -q -p phaseloop --bins $(TEST_FEATURES) && \
	url=$${PHASELOOP_PROMETHEUS_URL:-$${PROMETHEUS_URL:-}} && \
	if [ -n "$$url" ]; then export PHASELOOP_PROMETHEUS_URL=$$url; \
	else echo 'no Prometheus (set PROMETHEUS_URL): analysis and autoscaling cannot read' >&2; fi && \
	PHASELOOP_METRICS_ADDR=$${PHASELOOP_METRICS_ADDR:-127.0.0.1:$${PHASELOOP_METRICS_PORT:-18080}} \
	  exec $${CARGO_TARGET_DIR:-target}/debug/phaseloop-operator

test: lint deny unit e2e ## Everything CI runs: lint, cargo-deny, unit tests, end-to-end tests on a local control plane

unit: ## Unit and CRD tests (no cluster needed)
	$(CARGO) test --workspace

e2e: ## End-to-end tests against a local control plane started (and stopped) for them
	bash $(E2E)/run-e2e.sh

chaos: ## The crash campaign: CHAOS_ROUNDS rounds (default 20; make test runs 2), or until CHAOS_KILLS kills
	E2E_CHAOS_ROUNDS=$(or $(CHAOS_ROUNDS),20) E2E_CHAOS_KILLS=$(or $(CHAOS_KILLS),0) E2E_TEST=crash_campaign \
	  bash $(E2E)/run-e2e.sh --nocapture

bench: ## Benchmarks on a local control plane with a release build (not part of test; its smoke runs are)
	bash $(E2E)/run-bench.sh $(BENCH)

lint: ## rustfmt, clippy, rustdoc and shellcheck; warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The docs are for the people working on phaseloop: private items included, and linked.
	RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" $(CARGO) doc --workspace --no-deps --document-private-items
	bash $(E2E)/install-deps.sh && cd $(E2E) && shellcheck --severity=style -x *.sh

deny: ## cargo-deny: licenses, bans and sources of every dependency (deny.toml)
	bash $(E2E)/cargo-deny.sh

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/, the chart's copy of them and docs/api.md from the API types
	$(CARGO) run -q -p phaseloop --bin crdgen -- crds docs/api.md
	rm -f charts/phaseloop/crds/*.yaml && cp crds/*.yaml charts/phaseloop/crds/

deploy: bins ## Copy deploy/monitoring/ into the chart and render deploy/phaseloop.yaml from it
	cp deploy/monitoring/phaseloop-rules.yaml deploy/monitoring/grafana-dashboard.json charts/phaseloop/files/
	bash $(E2E)/render-deploy.sh

bins: ## Build the pinned control-plane binaries into the cache (outside the repository)
	bash $(E2E)/install-deps.sh && bash $(E2E)/build-e2e-bins.sh

cluster-up: bins ## Start the local control plane, Prometheus and the pushgateway on 127.0.0.1
	bash $(E2E)/start-cluster.sh
	@echo 'eval "$$($(E2E)/env.sh)"   # to use it from this shell'

cluster-down: ## Stop exactly the processes cluster-up started
	bash $(E2E)/stop-cluster.sh

node-up: cluster-up ## Start the real node (containerd, kubelet, kube-proxy in a network namespace) beside kwok
	bash $(E2E)/build-e2e-bins.sh node
	bash $(E2E)/start-node.sh

node-down: ## Stop the real node and remove its namespaces, pods, mounts and cgroups
	bash $(E2E)/stop-node.sh

images: ## Build the real node's images (operator, demo app, pause, curl); import them when the node is up
	@if [ -S $${E2E_STATE:-target/e2e-cluster}/node/containerd.sock ]; then bash $(E2E)/build-images.sh import; \
	else bash $(E2E)/build-images.sh build; fi
