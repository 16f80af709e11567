# Headroom developer entry points. `make help` lists them.
PYTHON ?= python3
CLUSTER_DIR ?= .cluster
KIND_CLUSTER ?= headroom
export PYTHONPATH := $(CURDIR)

.PHONY: help install controlplane cluster-up cluster-down demo test test-unit lint bench bench-reconcile kind-up kind-down image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## install Headroom and its test tools into the current Python
	$(PYTHON) -m pip install -q -e '.[test]'

controlplane: ## build the local control plane binary (cached in .cache/bin)
	$(PYTHON) -m tests.harness.controlplane build

cluster-up: ## start the local control plane in the background; prints the KUBECONFIG line
	$(PYTHON) -m tests.harness.controlplane up --state-dir $(CLUSTER_DIR)

cluster-down: ## stop the local control plane
	$(PYTHON) -m tests.harness.controlplane down --state-dir $(CLUSTER_DIR)

demo: install ## control plane + sample Projects + file history + the operator: shows derived quotas
	$(PYTHON) -m hack.demo

test: install ## the whole suite (unit and integration, on the local control plane)
	$(PYTHON) -m pytest -q -rs -p no:cacheprovider

test-unit: ## the fast unit tests only
	$(PYTHON) -m pytest -q tests/unit

lint: ## ruff
	$(PYTHON) -m ruff check operator tests bench

bench: install ## API cost benchmark against the naive baseline (writes bench/results/)
	$(PYTHON) -m bench.run

bench-reconcile: install ## CPU per reconcile at 100, 1000 and 3000 Projects (no cluster; seconds)
	$(PYTHON) -m bench.reconcile_cost

image: ## build the operator image (needs Docker)
	docker build -f operator/Dockerfile -t headroom:dev .

kind-up: ## for Docker users: a kind cluster with the CRDs, for HEADROOM_TEST_KUBECONFIG
	kind create cluster --name $(KIND_CLUSTER) --kubeconfig $(CLUSTER_DIR)/kind-kubeconfig
	KUBECONFIG=$(CLUSTER_DIR)/kind-kubeconfig kubectl apply -k crds/
	@echo "export HEADROOM_TEST_KUBECONFIG=$(CURDIR)/$(CLUSTER_DIR)/kind-kubeconfig"

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
