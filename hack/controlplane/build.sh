#!/usr/bin/env bash
# Builds the cluster binary (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
# and kube-proxy in one) and, next to it, the node's static `pause` program.
# Usage: hack/controlplane/build.sh OUTPUT
# Go's module and build caches make a warm rebuild take seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../.cache/bin/controlplane"}
version=$(sed -n 's|^[[:space:]]*k8s.io/kubernetes v\([0-9.]*\)$|\1|p' "$here/go.mod" | head -1)
minor=$(echo "$version" | cut -d. -f2)
mkdir -p "$(dirname "$out")"
cd "$here"
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -p "${GO_BUILD_JOBS:-2}" -trimpath \
  -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=v$version \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=v$version" \
  -o "$out.tmp" .
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" \
  -o "$(dirname "$out")/pause" ./pause
mv "$out.tmp" "$out"
echo "$out"
