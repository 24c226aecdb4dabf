#!/usr/bin/env bash
# Build the pinned upstream Kubernetes control plane and node programs
# (kubelet, kube-proxy), etcd, CoreDNS, kubectl and helm, the object store
# (versitygw) and the image registry (CNCF Distribution) from the Go module
# proxy, and the pod sandbox's pause program from cluster/go/pause, into a
# per-user cache outside the checkout. Prints the directory of the binaries.
#
# `build.sh gitops` builds the GitOps tier's programs instead — Flux's
# source-controller and kustomize-controller (with their CRDs and the
# source-controller's ClusterRole) and Flux's test git server — and prints their
# directory (bin/, crds/, rbac/).
#
# `build.sh authproxy` builds the security tier's authenticating proxy, oauth2-proxy
# (it stands in front of the dashboard), and prints its directory.
#
# The cache is keyed by version, so a fresh clone (what CI makes) reuses the
# binaries and a version bump builds a new set beside the old one.
set -euo pipefail
mode="${1:-cluster}"
if [[ $mode != cluster && $mode != gitops && $mode != authproxy ]]; then
  echo "usage: build.sh [gitops|authproxy]" >&2
  exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${KITARU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kitaru-k8s}"
bin="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
logs="$cache/build-logs"
# CoreDNS, crictl, versitygw, the registry and pause live beside the pinned set, each
# keyed by its own version (pause by the hash of its source), and are linked into it.
pause_src="$here/go/pause/main.go"
coredns_bin="$cache/coredns-$COREDNS_VERSION"
crictl_bin="$cache/crictl-$CRICTL_VERSION"
versitygw_bin="$cache/versitygw-$VERSITYGW_VERSION"
registry_src="$here/go/registry/main.go"
registry_bin="$cache/registry-$DISTRIBUTION_VERSION-$(sha256sum "$registry_src" | cut -c1-12)"
pause_bin="$cache/pause-$(sha256sum "$pause_src" | cut -c1-12)"
mkdir -p "$bin" "$coredns_bin" "$crictl_bin" "$versitygw_bin" "$registry_bin" "$pause_bin" "$logs"

k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
# The programs kept beside the set, by their keyed paths (a new version or main.go is
# missing even while the link to the old one is there).
beside=("$coredns_bin/coredns" "$crictl_bin/crictl" "$versitygw_bin/versitygw"
  "$registry_bin/registry" "$pause_bin/pause")
missing=()
for b in "${k8s_cmds[@]}" etcd helm; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
for path in "${beside[@]}"; do [[ -x "$path" ]] || missing+=("${path##*/}"); done

# The GitOps set: each program in a folder keyed by its version (the git server's
# also by the hash of its main.go), linked into one folder keyed by all of them.
gitserver_src="$here/go/gittestserver/main.go"
source_controller="$cache/flux-source-controller-$FLUX_SOURCE_CONTROLLER_VERSION"
kustomize_controller="$cache/flux-kustomize-controller-$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
gitserver="$cache/gittestserver-$GITTESTSERVER_VERSION-$(sha256sum "$gitserver_src" | cut -c1-12)"
gitops="$cache/gitops-sc-$FLUX_SOURCE_CONTROLLER_VERSION-kc-$FLUX_KUSTOMIZE_CONTROLLER_VERSION-${gitserver##*/}"
gitops_ready() {
  [[ -x "$gitops/bin/source-controller" && -x "$gitops/bin/kustomize-controller" &&
    -x "$gitops/bin/gittestserver" ]]
}
authproxy="$cache/oauth2-proxy-$OAUTH2_PROXY_VERSION"
if [[ $mode == authproxy && -x "$authproxy/oauth2-proxy" ]]; then
  echo "$authproxy"
  exit 0
fi
if [[ $mode == gitops ]] && gitops_ready; then
  echo "$gitops"
  exit 0
fi
if [[ $mode == cluster && ${#missing[@]} -eq 0 ]]; then
  ln -sf "${beside[@]}" "$bin/"
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build: step 'find Go' failed: no 'go' on PATH. Install Go >= 1.26 (https://go.dev/doc/install)." >&2
  exit 1
fi

# Run one build step; on failure name the step and its log, then stop.
step() {
  local name="$1"; shift
  local log="$logs/$name.log"
  local began=$SECONDS
  echo "build: $name (log: $log)" >&2
  if ! "$@" >"$log" 2>&1; then
    echo "build: step '$name' failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  echo "build: $name done in $((SECONDS - began)) s" >&2
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
  local cmd packages=()
  for cmd in "${k8s_cmds[@]}"; do packages+=("k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION"); done
  go get "${packages[@]}"
  for cmd in "${k8s_cmds[@]}"; do
    [[ -x "$bin/$cmd" ]] && continue
    go build -trimpath -ldflags "$ldflags_k8s" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
}

# A module of our own whose main.go (cluster/go/NAME) calls the upstream entrypoint;
# a fourth argument adds linker flags.
build_go_main() {
  local name="$1" require="$2" out="$3" ldflags="-s -w ${4:-}"
  local mod="$cache/src/$name-${require##*@}"
  mkdir -p "$mod"
  cd "$mod"
  printf 'module kitaru.local/%s\n\ngo 1.24\n' "$name" >go.mod
  cp "$here/go/$name/main.go" main.go
  go get "$require"
  go mod tidy
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp" .
  mv "$out.tmp" "$out"
}

build_etcd() { build_go_main etcd "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$bin/etcd"; }

build_helm() {
  local mod="$cache/src/helm-$HELM_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  GOBIN="$mod/out" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$mod/out/helm" "$bin/helm"
}

# CoreDNS with only the plugins of the cluster's Corefile (cluster/go/coredns).
build_coredns() {
  build_go_main coredns "github.com/coredns/coredns@$COREDNS_VERSION" "$coredns_bin/coredns"
}

# crictl talks CRI to containerd: `cluster down` removes every pod sandbox with it.
build_crictl() {
  local mod="$cache/src/crictl-$CRICTL_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  GOBIN="$crictl_bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

# The S3 store of the local cluster: versitygw's posix backend keeps objects as files.
build_versitygw() {
  local mod="$cache/src/versitygw-$VERSITYGW_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  GOBIN="$mod/out" go install -trimpath -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  mv "$mod/out/versitygw" "$versitygw_bin/versitygw"
}

# The image registry beside the node (what a kind user runs as the `kind-registry`
# container): CNCF Distribution's `registry serve CONFIG`, with the filesystem storage
# driver only (cluster/go/registry), like CoreDNS with only the plugins we use.
build_registry() {
  build_go_main registry "github.com/distribution/distribution/v3@$DISTRIBUTION_VERSION" \
    "$registry_bin/registry" \
    "-X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION"
}

build_pause() {
  local mod="$cache/src/${pause_bin##*/}"
  mkdir -p "$mod"
  cd "$mod"
  printf 'module kitaru.local/pause\n\ngo 1.24\n' >go.mod
  cp "$pause_src" main.go
  go build -trimpath -ldflags "-s -w" -o "$pause_bin/pause.tmp" .
  mv "$pause_bin/pause.tmp" "$pause_bin/pause"
}

# A Flux controller's main package is its module's root, and its go.mod replaces the
# api submodule with ./api, which the module's zip lacks: build a copy of the module
# that requires the published api module of the same version instead. Extra
# arguments are more `go mod edit` flags. The CRDs (and RBAC) come from its config/.
build_flux_controller() {
  local name="$1" version="$2" out="$3"
  shift 3
  local src mod="$cache/src/flux-$name-$version"
  src="$(go mod download -json "github.com/fluxcd/$name@$version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  rm -rf "$mod"
  cp -r "$src" "$mod"
  chmod -R u+w "$mod"
  cd "$mod"
  go mod edit -dropreplace "github.com/fluxcd/$name/api" "$@"
  go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" .
  mkdir -p "$out/crds"
  cp config/crd/bases/*.yaml "$out/crds/"
  if [[ -f config/rbac/role.yaml ]]; then
    mkdir -p "$out/rbac"
    cp config/rbac/role.yaml "$out/rbac/$name.yaml"
  fi
  mv "$out/$name.tmp" "$out/$name"
}

build_source_controller() {
  build_flux_controller source-controller "$FLUX_SOURCE_CONTROLLER_VERSION" "$source_controller" \
    -replace="github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@$FLUX_ARTIFACT_VERSION"
}

build_kustomize_controller() {
  build_flux_controller kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION" "$kustomize_controller"
}

build_gittestserver() {
  build_go_main gittestserver "github.com/fluxcd/pkg/gittestserver@$GITTESTSERVER_VERSION" \
    "$gitserver/gittestserver"
}

# oauth2-proxy's main package is its module's root; its go.mod has no replace.
build_oauth2_proxy() {
  local mod="$cache/src/oauth2-proxy-$OAUTH2_PROXY_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  GOBIN="$mod/out" go install -trimpath \
    -ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" \
    "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION"
  mv "$mod/out/oauth2-proxy" "$authproxy/oauth2-proxy"
}

start=$(date +%s)
if [[ $mode == authproxy ]]; then
  mkdir -p "$authproxy"
  step oauth2-proxy build_oauth2_proxy
  echo "build: done in $(($(date +%s) - start)) s" >&2
  echo "$authproxy"
  exit 0
fi
if [[ $mode == gitops ]]; then
  mkdir -p "$source_controller" "$kustomize_controller" "$gitserver"
  [[ -x "$gitserver/gittestserver" ]] || step gittestserver build_gittestserver
  [[ -x "$source_controller/source-controller" ]] || step source-controller build_source_controller
  [[ -x "$kustomize_controller/kustomize-controller" ]] || step kustomize-controller build_kustomize_controller
  mkdir -p "$gitops/bin" "$gitops/crds" "$gitops/rbac"
  ln -sf "$source_controller"/crds/*.yaml "$kustomize_controller"/crds/*.yaml "$gitops/crds/"
  ln -sf "$source_controller"/rbac/*.yaml "$gitops/rbac/"
  ln -sf "$source_controller/source-controller" "$kustomize_controller/kustomize-controller" \
    "$gitserver/gittestserver" "$gitops/bin/"
  echo "build: done in $(($(date +%s) - start)) s" >&2
  echo "$gitops"
  exit 0
fi
[[ -x "$bin/etcd" ]] || step etcd build_etcd
[[ -x "$bin/helm" ]] || step helm build_helm
[[ -x "$coredns_bin/coredns" ]] || step coredns build_coredns
[[ -x "$crictl_bin/crictl" ]] || step crictl build_crictl
[[ -x "$versitygw_bin/versitygw" ]] || step versitygw build_versitygw
[[ -x "$registry_bin/registry" ]] || step registry build_registry
[[ -x "$pause_bin/pause" ]] || step pause build_pause
ln -sf "${beside[@]}" "$bin/"
for b in "${k8s_cmds[@]}"; do
  if [[ ! -x "$bin/$b" ]]; then step kubernetes build_kubernetes; break; fi
done
echo "build: done in $(($(date +%s) - start)) s" >&2
echo "$bin"
