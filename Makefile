# kitaru-k8s developer entry points. `make demo` and `make test` are the two
# commands the README promises; everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
CLUSTER_DIR := $(CURDIR)/.cluster
export KUBECONFIG := $(CLUSTER_DIR)/kubeconfig
KIND_KUBECONFIG := $(CLUSTER_DIR)/kind-kubeconfig
IMAGE_TAG ?= 0.1.0
DIST ?= dist

.PHONY: help install packages dist build-cluster build-gitops build-authproxy images cluster-up cluster-down crds check-crds lint test test-unit test-gitops demo bench bench-node bench-pods kind-up kind-install

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## pip install the project with its dev extras
	$(PYTHON) -m pip install -q -e '.[dev]'

packages: ## apt-get install the Debian packages of the node and the image builds (when missing)
	bash cluster/install-packages.sh

dist: ## the wheel, the sdist (python -m build) and the packaged chart (the pinned helm), into $(DIST)/
	mkdir -p "$(DIST)" && rm -f "$(DIST)"/kitaru_k8s-* "$(DIST)"/kitaru-operator-*.tgz
	$(PYTHON) -m build --outdir "$(DIST)" .
	"$$(bash cluster/build.sh | tail -1)/helm" package charts/kitaru-operator --destination "$(DIST)"

build-cluster: packages ## build the pinned upstream binaries (Kubernetes, store, registry) into ~/.cache/kitaru-k8s (once)
	bash cluster/build.sh

build-gitops: ## build Flux's source- and kustomize-controller and its git test server into ~/.cache/kitaru-k8s (once)
	bash cluster/build.sh gitops

build-authproxy: ## build oauth2-proxy, the security tier's authenticating proxy, into ~/.cache/kitaru-k8s (once)
	bash cluster/build.sh authproxy

images: build-cluster ## build the images whose inputs changed; with the cluster up, push them (and the chart) to its registry
	$(PYTHON) -m kitaru_localnode.cluster images

cluster-up: build-cluster ## start the control plane and the node (kubelet, containerd, kube-proxy, CoreDNS), its registry and store
	$(PYTHON) -m kitaru_localnode.cluster up

cluster-down: ## stop everything cluster-up started
	$(PYTHON) -m kitaru_localnode.cluster down

crds: ## regenerate crds/ (and the chart's copy) from the pydantic models
	$(PYTHON) -m kitaru.core.crdgen crds
	cp crds/kitaru.dev_flow*.yaml charts/kitaru-operator/crds/
	cp crds/kitaru.dev_admission.yaml charts/kitaru-operator/files/admission.yaml

check-crds: ## fail when crds/ drifts from the models
	$(PYTHON) -m kitaru.core.crdgen --check crds

lint: ## ruff, formatting, mypy and the import contracts (core, client, operator, runner)
	ruff check .
	ruff format --check .
	mypy
	lint-imports

test-unit: ## the fast tier: pure rules, no cluster, nothing built
	$(PYTHON) -m pytest -q tests/unit

test: lint build-cluster build-gitops build-authproxy ## everything: lint, unit, API, end-to-end and GitOps tiers on the local cluster
	@started=0; \
	if ! $(PYTHON) -m kitaru_localnode.cluster status >/dev/null 2>&1; then started=1; fi; \
	$(PYTHON) -m kitaru_localnode.cluster up || exit 1; \
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=30; rc=$$?; \
	if [ $$started = 1 ]; then $(PYTHON) -m kitaru_localnode.cluster down; fi; \
	exit $$rc

# KITARU_TEST_CLUSTER_DIR=DIR runs it on another cluster, e.g. a control plane of its own
# (`python -m kitaru_localnode.cluster up --no-node --dir DIR`): its stories need no pod.
test-gitops: build-cluster build-gitops ## the GitOps tier alone: Flux syncs examples/gitops from a git server
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/gitops

demo: install cluster-up ## the product story on the local cluster (with the pinned kubectl)
	PATH="$$(bash cluster/build.sh | tail -1):$$PATH" $(PYTHON) examples/demo.py

BENCH_CLUSTER ?= /tmp/kitaru-bench-cluster

bench: build-cluster ## benchmarks (figures as ratios to a baseline measured in the same run)
	$(PYTHON) bench/bench_resolve.py
	$(PYTHON) bench/bench_cli_start.py
	$(PYTHON) -m kitaru_localnode.cluster up --no-node --dir $(BENCH_CLUSTER)
	KUBECONFIG=$(BENCH_CLUSTER)/kubeconfig "$$(bash cluster/build.sh | tail -1)/kubectl" apply -f crds/
	KUBECONFIG=$(BENCH_CLUSTER)/kubeconfig $(PYTHON) -m kitaru_localnode.admission \
	  --kubectl "$$(bash cluster/build.sh | tail -1)/kubectl"
	KUBECONFIG=$(BENCH_CLUSTER)/kubeconfig $(PYTHON) bench/bench_dispatch.py \
	  && KUBECONFIG=$(BENCH_CLUSTER)/kubeconfig $(PYTHON) bench/bench_scale.py; rc=$$?; \
	  $(PYTHON) -m kitaru_localnode.cluster down --dir $(BENCH_CLUSTER); exit $$rc
	$(MAKE) bench-pods

bench-node: cluster-up ## pod start latency at 5 pods/s and invoke -> result on the local node
	$(PYTHON) bench/bench_node.py

bench-pods: cluster-up ## submit -> pod and submit -> result beside Argo Workflows (builds it once)
	$(PYTHON) bench/bench_pods.py

kind-up: ## a kind cluster (needs Docker and kind) with the chart installed
	@mkdir -p $(CLUSTER_DIR)
	kind create cluster --config kind-config.yaml --kubeconfig $(KIND_KUBECONFIG)
	$(MAKE) kind-install

kind-install: ## build the images, load them into kind, helm install the chart
	docker build -f operator/Dockerfile -t ghcr.io/kitaru-k8s/operator:$(IMAGE_TAG) .
	docker build -f cli/Dockerfile.runner -t ghcr.io/kitaru-k8s/runner:$(IMAGE_TAG) .
	kind load docker-image --name kitaru ghcr.io/kitaru-k8s/operator:$(IMAGE_TAG) ghcr.io/kitaru-k8s/runner:$(IMAGE_TAG)
	KUBECONFIG=$(KIND_KUBECONFIG) helm upgrade --install kitaru charts/kitaru-operator \
	  --namespace kitaru-system --create-namespace --set watch.allNamespaces=true --wait
