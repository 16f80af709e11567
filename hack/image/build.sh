#!/usr/bin/env bash
# Builds the operator image headroom:dev from the unchanged operator/Dockerfile without a Docker
# engine, and writes it as an OCI archive that the local node imports (`make image`).
#
# Our machines cannot pull python:3.11-slim, so the first run builds a local stand-in for it: a
# Debian bookworm root filesystem with python3 (debootstrap), committed under that name into
# buildah's storage in the gitignored .cache/image. It is for our machines only: users build the
# same Dockerfile with Docker against the real base image. Where HTTPS is intercepted by a local CA,
# pip inside the build needs that CA, so the stand-in carries this machine's CA bundle and PIP_CERT.
#
# Usage: hack/image/build.sh [OUTPUT]   (default .cache/image/headroom-dev.oci.tar)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=$repo/.cache/image
out=${1:-$cache/headroom-dev.oci.tar}
name=docker.io/library/headroom:dev
base=docker.io/library/python:3.11-slim
mkdir -p "$cache"
bah() {
  buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay "$@"
}
export BUILDAH_ISOLATION=chroot

if ! bah inspect --type image "$base" >/dev/null 2>&1; then
  start=$(date +%s)
  rootfs=$cache/base-rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  ln -sf python3 "$rootfs/usr/bin/python"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$cache/base.tar" .
  rm -rf "$rootfs"
  ctr=$(bah from scratch)
  bah add "$ctr" "$cache/base.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 "$ctr"
  bah commit --quiet "$ctr" "$base" >/dev/null
  bah rm "$ctr" >/dev/null
  rm -f "$cache/base.tar"
  echo "stand-in for python:3.11-slim built in $(($(date +%s) - start)) s" >&2
fi

start=$(date +%s)
cd "$repo"
bah bud --quiet --layers --pull=never --network=host --cgroup-manager cgroupfs \
  -f operator/Dockerfile -t "$name" . >/dev/null
rm -f "$out.tmp"
bah push --quiet "$name" "oci-archive:$out.tmp:$name"
mv "$out.tmp" "$out"
size=$(bah images --format '{{.Size}}' "$name" 2>/dev/null | head -1)
# Layers of earlier builds (buildah --layers caches them) are kept; drop the ones nothing uses.
bah rmi --prune >/dev/null 2>&1 || true
echo "headroom:dev built in $(($(date +%s) - start)) s; image size $size (uncompressed);" \
  "archive $(du -h "$out" | cut -f1)" >&2
echo "$out"
