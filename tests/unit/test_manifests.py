"""The shipped manifests, read as `kubectl apply` reads them: no file silently replaces another's object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def _objects(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") and doc.get("kind") != "Kustomization":
            yield doc


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return (group, str(obj["kind"]), str(meta.get("namespace") or ""), str(meta.get("name")))


def test_no_two_manifest_files_define_the_same_object() -> None:
    """Applying an example after the install (as the example's header says) must not replace an
    installed object, e.g. the reviewers' ClusterRole headroom-approver with different rules."""
    defined: dict[tuple[str, str, str, str], Path] = {}
    clashes = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for obj in _objects(path):
            key = _key(obj)
            if key in defined:
                clashes.append(f"{key[1]} {key[3]}: {defined[key].relative_to(REPO)} and {path.relative_to(REPO)}")
            defined.setdefault(key, path)
    assert not clashes, "objects defined twice:\n" + "\n".join(clashes)


def test_the_team_example_leaves_the_reviewers_role_to_the_install() -> None:
    installed = {_key(o) for o in _objects(MANIFESTS / "approval" / "approvers-rbac.yaml")}
    example = {_key(o) for o in _objects(MANIFESTS / "examples" / "team-editor-rbac.yaml")}
    assert ("rbac.authorization.k8s.io", "ClusterRole", "", "headroom-approver") in installed
    assert example and not example & installed


def test_kubectl_get_projects_shows_the_short_pending_id() -> None:
    # The full id is 71 characters and would push every other column off the screen.
    crd = yaml.safe_load((REPO / "crds" / "projects.headroom.dev.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Pending"] == ".status.pendingChange.shortId"
    pending = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["pendingChange"]
    assert pending["properties"]["shortId"]["type"] == "string"
