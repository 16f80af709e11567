"""Container images without a registry: one-layer OCI archives written with the standard library.

The local node cannot pull anything, so every image it runs is imported into its containerd:
the pause image (our static `pause` program, tagged as the image the kubelet asks for) here, and
Headroom's own image by `hack/image/build.sh`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _blob(out: tarfile.TarFile, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _add_file(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))


def write_oci_archive(
    path: Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], user: str = "65535:65535"
) -> Path:
    """An OCI image archive of one layer holding `files` ({path: (content, mode)}), named `name`."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for file_path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(file_path.lstrip("/"))
            info.size, info.mode = len(content), mode
            layer.addfile(info, io.BytesIO(content))
    diff = layer_tar.getvalue()
    compressed = gzip.compress(diff, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(diff).hexdigest()}"]},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as out:
        layer_desc = _blob(out, compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
        config_desc = _blob(out, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = _blob(out, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        _add_file(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_file(out, "index.json", json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode())
    return path


def pause_archive(pause_binary: Path, path: Path) -> Path:
    """The sandbox image: our static pause program, alone, under the name the kubelet asks for."""
    return write_oci_archive(path, PAUSE_IMAGE, {"/pause": (pause_binary.read_bytes(), 0o755)}, ["/pause"])
