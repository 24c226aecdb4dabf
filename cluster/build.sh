#!/usr/bin/env bash
# Build the pinned upstream Kubernetes control plane, etcd, kubectl and helm
# from the Go module proxy into a per-user cache outside the checkout.
#
# The cache is keyed by version, so a fresh clone (what CI makes) reuses the
# binaries and a version bump builds a new set beside the old one.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${KITARU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kitaru-k8s}"
bin="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
logs="$cache/build-logs"
mkdir -p "$bin" "$logs"

wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)
missing=()
for b in "${wanted[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build: step 'find Go' failed: no 'go' on PATH. Install Go >= 1.24 (https://go.dev/doc/install)." >&2
  exit 1
fi

# Run one build step; on failure name the step and its log, then stop.
step() {
  local name="$1"; shift
  local log="$logs/$name.log"
  echo "build: $name (log: $log)" >&2
  if ! "$@" >"$log" 2>&1; then
    echo "build: step '$name' failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
ldflags_k8s="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=$(echo "$K8S_VERSION" | cut -d. -f1 | tr -d v) \
 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

build_kubernetes() {
  local mod="$cache/src/kubernetes-$K8S_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
  # with ./staging paths; a consumer replaces each with the matching release.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  local staging_version="v0${K8S_VERSION#v1}"
  {
    echo "module kitaru.local/k8stools"
    echo
    echo "go $(sed -n 's/^go \(.*\)/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >go.mod
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go build -trimpath -ldflags "$ldflags_k8s" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
}

build_etcd() {
  local mod="$cache/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  cat >go.mod <<EOF
module kitaru.local/etcdtool

go 1.24
EOF
  cat >main.go <<'EOF'
// Command etcd is the upstream etcd server entrypoint.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_helm() {
  local mod="$cache/src/helm-$HELM_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  GOBIN="$mod/out" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$mod/out/helm" "$bin/helm"
}

start=$(date +%s)
[[ -x "$bin/etcd" ]] || step etcd build_etcd
[[ -x "$bin/helm" ]] || step helm build_helm
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if [[ ! -x "$bin/$b" ]]; then step kubernetes build_kubernetes; break; fi
done
echo "build: done in $(($(date +%s) - start)) s" >&2
echo "$bin"
