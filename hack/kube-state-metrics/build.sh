#!/usr/bin/env bash
# Builds kube-state-metrics at the release go.mod pins (see its `tool` line) into OUTPUT.
# Usage: hack/kube-state-metrics/build.sh [OUTPUT]   (default .cache/bin/kube-state-metrics)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../.cache/bin/kube-state-metrics"}
version=$(sed -n 's|^[[:space:]]*k8s.io/kube-state-metrics/v2 \(v[0-9.]*\).*|\1|p' "$here/go.mod" | head -1)
mkdir -p "$(dirname "$out")"
cd "$here"
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -p "${GO_BUILD_JOBS:-2}" -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
  -o "$out.tmp" k8s.io/kube-state-metrics/v2
mv "$out.tmp" "$out"
echo "$out"
