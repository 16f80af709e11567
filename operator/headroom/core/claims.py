"""Whether a Project may govern a namespace it lists: the one rule for namespace claims.

A team that may edit its own Project could otherwise put any namespace under it: kube-system, a
namespace no Project claims yet (and bootstrap it with a floor of its choosing), or another team's.
So a claim counts only when something the team cannot write confirms it:

- the platform labelled the Namespace `headroom.dev/project: <project>` (teams cannot write
  Namespaces);
- the namespace was listed when the Project was created (creating a Project is a platform act: the
  example RBAC lets a team update its Project, never create one);
- Headroom already governs it for this Project (its quota carries the Project's label), or a
  sign-off confirmed it before (Headroom records that in `status.approved.namespaces`);
- the pending change that adds it is signed off.

Protected namespaces (the system ones and Headroom's own) are governed only with the label: no
sign-off can put a quota on kube-system. A label naming another Project refuses the claim.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from headroom.core.changes import SettingChange
from headroom.core.names import PROJECT_LABEL

__all__ = ["PROJECT_LABEL", "Claim", "judge_claim"]


ClaimState = Literal["confirmed", "unconfirmed", "refused"]


@dataclass(frozen=True)
class Claim:
    namespace: str
    state: ClaimState
    why: str  # for a person: how it was confirmed, or what confirms it

    def as_loosening(self, project: str) -> SettingChange:
        return SettingChange(
            f"spec.namespaces[{self.namespace}]", "not governed by this Project", f"governed by Project {project}"
        )


def judge_claim(
    project: str,
    namespace: str,
    *,
    label: str | None,
    quota_project: str | None,
    approved_namespaces: Collection[str],
    listed_at_creation: bool,
    protected: Collection[str],
    signed_off: bool,
) -> Claim:
    """Decide one claim of `project` on `namespace` from what the cluster and status show."""
    if label is not None and label != project:
        return Claim(
            namespace,
            "refused",
            f"namespace {namespace} is labelled {PROJECT_LABEL}={label}: it belongs to Project {label}",
        )
    if label == project:
        return Claim(namespace, "confirmed", f"the Namespace is labelled {PROJECT_LABEL}={project}")
    if namespace in protected:
        return Claim(
            namespace,
            "refused",
            f"namespace {namespace} is protected (a system namespace or Headroom's own) and is never "
            f"governed unless the platform labels it {PROJECT_LABEL}={project}",
        )
    if quota_project == project:
        return Claim(namespace, "confirmed", "Headroom governs it for this Project already")
    if namespace in approved_namespaces:
        return Claim(namespace, "confirmed", "confirmed by an earlier sign-off or at creation")
    if listed_at_creation:
        return Claim(namespace, "confirmed", "listed when the Project was created")
    if signed_off:
        return Claim(namespace, "confirmed", "its addition was signed off")
    return Claim(
        namespace,
        "unconfirmed",
        f"namespace {namespace} was added to the Project after it was created, so the claim needs "
        f"confirming: the platform labels the Namespace {PROJECT_LABEL}={project}, or an approver signs off "
        "the pending change",
    )
