# kitaru-k8s developer entry points. `make demo` and `make test` are the two
# commands the README promises; everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
CLUSTER_DIR := $(CURDIR)/.cluster
export KUBECONFIG := $(CLUSTER_DIR)/kubeconfig

.PHONY: help install build-cluster cluster-up cluster-down crds check-crds lint test test-unit demo bench kind-up kind-install

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## pip install the project with its dev extras
	$(PYTHON) -m pip install -q -e '.[dev]'

build-cluster: ## build the pinned upstream binaries into ~/.cache/kitaru-k8s (once)
	bash cluster/build.sh

cluster-up: build-cluster ## start etcd, kube-apiserver, controllers, scheduler and the local node
	$(PYTHON) -m kitaru_localnode.cluster up

cluster-down: ## stop everything cluster-up started
	$(PYTHON) -m kitaru_localnode.cluster down

crds: ## regenerate crds/ (and the chart's copy) from the pydantic models
	$(PYTHON) -m kitaru.core.crdgen crds
	cp crds/kitaru.dev_flow*.yaml charts/kitaru-operator/crds/
	cp crds/kitaru.dev_admission.yaml charts/kitaru-operator/files/admission.yaml

check-crds: ## fail when crds/ drifts from the models
	$(PYTHON) -m kitaru.core.crdgen --check crds

lint: ## ruff, formatting, mypy and the import contracts of the pure core
	ruff check .
	ruff format --check .
	mypy
	lint-imports

test-unit: ## the fast tier: pure rules, no cluster
	$(PYTHON) -m pytest -q tests/unit

test: lint build-cluster ## everything: lint, unit, API and end-to-end tiers on the local cluster
	@started=0; \
	if ! $(PYTHON) -m kitaru_localnode.cluster status >/dev/null 2>&1; then \
	  $(PYTHON) -m kitaru_localnode.cluster up || exit 1; started=1; fi; \
	$(PYTHON) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$started = 1 ]; then $(PYTHON) -m kitaru_localnode.cluster down; fi; \
	exit $$rc

demo: install cluster-up ## the product story on the local cluster
	$(PYTHON) -m kitaru.demo

bench: ## benchmarks (figures as ratios to a baseline measured in the same run)
	$(PYTHON) bench/bench_resolve.py
	$(PYTHON) bench/bench_cli_start.py
	$(PYTHON) bench/bench_dispatch.py
