#!/usr/bin/env bash
# Install the Debian packages the local cluster needs, when missing: containerd, runc
# and the CNI plugins of the node, iptables for kube-proxy, iproute2 for the pod
# bridge, mmdebstrap and buildah for the images, chromium and its driver for the
# dashboard's browser tests. Needs root (apt-get), as the node does.
set -euo pipefail
packages=(curl util-linux iproute2 iptables containerd runc containernetworking-plugins
  buildah mmdebstrap chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-packages: apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
