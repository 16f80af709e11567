#!/usr/bin/env bash
# Everything the suite needs on a fresh machine of ours (Debian bookworm), idempotent and quick when
# done already; used by the Makefile (`make setup`, and so `make test`) and by .ci/run:
#   1. Debian packages, only those missing: Prometheus, promtool and Alertmanager for the tests;
#      containerd, runc, the CNI plugins and nftables for the local node; buildah and debootstrap
#      for the operator image.
#   2. A virtualenv in .venv with Headroom and its test tools (re-installed when pyproject.toml changes).
#   3. The cluster binary built from hack/controlplane (Go >= 1.24; cached in .cache/bin), and
#      kube-state-metrics from hack/kube-state-metrics (for the end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}

need_apt=()
want() { command -v "$1" >/dev/null || need_apt+=("$2"); }
want prometheus prometheus
want promtool prometheus
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
  || need_apt+=(prometheus-alertmanager)
want containerd containerd
want runc runc
want nft nftables
want buildah buildah
want debootstrap debootstrap
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need_apt+=(containernetworking-plugins)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: ${need_apt[*]} (apt-get install them as root)" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps node-exporter & co. out; the services are started by the tests.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# A virtualenv of its own: nothing leaks into, or out of, the machine's Python.
stamp="$venv/.headroom-installed"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# The cluster is built from Go modules and needs Go >= 1.24 (Kubernetes 1.34's own floor); Debian
# bookworm's golang-go (1.19) is too old to be a fallback.
if ! command -v go >/dev/null; then
  echo "error: Go >= 1.24 is needed to build the local cluster (hack/controlplane)" >&2
  exit 1
fi
"$venv/bin/python" -m hack.localcluster.controlplane build >/dev/null
"$venv/bin/python" -m hack.localcluster.ksm >/dev/null
