# Headroom developer entry points. `make help` lists them.
# The virtualenv that hack/setup.sh creates; PYTHON=... picks another interpreter.
PYTHON ?= .venv/bin/python
CLUSTER_DIR ?= .cluster
KIND_CLUSTER ?= headroom
# make cluster-up: the control plane and one node (kube-scheduler, containerd, kubelet, kube-proxy)
# for pods; NODE=0 keeps the lighter cluster without a node.
NODE ?= 1
IMAGE ?= headroom:dev
IMAGE_ARCHIVE ?= .cache/image/headroom-dev.oci.tar
KUBECTL ?= kubectl
export PYTHONPATH := $(CURDIR)
# install/deploy and friends act on $KUBECONFIG's cluster; without one set, on the local cluster if it runs.
LOCAL_KUBECONFIG = $$( [ -z "$$KUBECONFIG" ] && [ -f $(CLUSTER_DIR)/kubeconfig ] && echo $(CLUSTER_DIR)/kubeconfig || echo "$$KUBECONFIG")

.PHONY: help setup install uninstall run controlplane cluster-up cluster-down demo test test-unit test-e2e lint fmt bench \
	bench-reconcile bench-history kind-up kind-down image deploy undeploy

help: ## list the targets, by section
	@awk '/^##@ /{printf "\n%s\n", substr($$0, 5)} /^[a-z0-9-]+:.*## /{split($$0, a, ":.*## "); printf "  %-16s %s\n", a[1], a[2]}' $(MAKEFILE_LIST)

##@ Development

setup: ## what the suite needs, installed when missing: Debian packages, .venv, the cluster binary
	hack/setup.sh


run: setup ## run the operator against the current KUBECONFIG (flags: ARGS="--mode=observe ...")
	$(PYTHON) -m headroom.cli run $(ARGS)

controlplane: ## build the local control plane binary (cached in .cache/bin)
	$(PYTHON) -m hack.localcluster.controlplane build

cluster-up: setup ## start the local control plane and one node (NODE=0: none); prints the KUBECONFIG line
	$(PYTHON) -m hack.localcluster.controlplane up --state-dir $(CLUSTER_DIR) --node $(NODE)

cluster-down: ## stop the local cluster; removes every process, mount, netns and cgroup it made
	$(PYTHON) -m hack.localcluster.controlplane down --state-dir $(CLUSTER_DIR)

demo: setup ## control plane + sample Projects + file history + the operator: shows derived quotas
	$(PYTHON) -m hack.demo

##@ Tests and checks

test: setup ## the whole suite: unit, integration (local control plane) and end-to-end (on a node)
	$(PYTHON) -m pytest -q -rs -p no:cacheprovider

test-e2e: setup ## end-to-end only: the operator's image deployed from manifests/ on a local node
	$(PYTHON) -m pytest -q -rs -p no:cacheprovider tests/e2e

test-unit: ## the fast unit tests only
	$(PYTHON) -m pytest -q tests/unit

lint: ## ruff check, ruff format --check and mypy --strict (as CI runs them)
	$(PYTHON) -m ruff check operator tests hack bench
	$(PYTHON) -m ruff format --check operator tests hack bench
	$(PYTHON) -m mypy

fmt: ## ruff format
	$(PYTHON) -m ruff format operator tests hack bench

##@ Benchmarks

bench: setup ## API cost benchmark against the naive baseline (writes bench/results/)
	$(PYTHON) -m bench.run

bench-reconcile: setup ## CPU per reconcile at 100, 1000 and 3000 Projects (no cluster; seconds)
	$(PYTHON) -m bench.reconcile_cost

bench-history: setup ## samples Prometheus reads for Headroom's history, old design beside new (~15 min)
	$(PYTHON) -m bench.history

##@ Deployment

install: ## install the CRD into the current cluster (KUBECONFIG's, else the local one)
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(KUBECTL) apply --server-side -k crds/

uninstall: ## remove the CRD from the current cluster (every Project, and what Headroom owns, goes with it)
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(KUBECTL) delete -k crds/ --ignore-not-found

image: setup ## build headroom:dev (buildah, no Docker engine) and load it into the running node
	hack/image/build.sh $(IMAGE_ARCHIVE)
	@if [ -S $(CLUSTER_DIR)/run/node/containerd/containerd.sock ]; then \
	  ctr --address $(CLUSTER_DIR)/run/node/containerd/containerd.sock -n k8s.io images import $(IMAGE_ARCHIVE) \
	  && echo "loaded into the local node"; \
	else echo "no local node running (make cluster-up): image left in $(IMAGE_ARCHIVE)"; fi

image-docker: ## build the operator image with Docker, as users do
	docker build -f operator/Dockerfile -t $(IMAGE) .


deploy: ## kubectl apply -k manifests/ with IMAGE set (KUBECONFIG's cluster, else the local one)
	KUBECONFIG=$(LOCAL_KUBECONFIG) hack/deploy.sh apply $(IMAGE)

undeploy: ## remove what deploy applied (the CRD too, so every Project goes with it)
	KUBECONFIG=$(LOCAL_KUBECONFIG) hack/deploy.sh delete $(IMAGE)

##@ With Docker (not needed here)

kind-up: ## for Docker users: a kind cluster with the CRDs, for HEADROOM_TEST_KUBECONFIG
	kind create cluster --name $(KIND_CLUSTER) --kubeconfig $(CLUSTER_DIR)/kind-kubeconfig
	KUBECONFIG=$(CLUSTER_DIR)/kind-kubeconfig kubectl apply -k crds/
	@echo "export HEADROOM_TEST_KUBECONFIG=$(CURDIR)/$(CLUSTER_DIR)/kind-kubeconfig"

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
