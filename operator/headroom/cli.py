"""The `headroom` command (also `kubectl headroom`): run the operator, plan, and govern changes.

    headroom run [flags]                      the operator
    headroom plan [PROJECT | -f FILE] [-o table|json|yaml]
    headroom change-id FILE                   the id a reviewer approves, computed offline
    headroom verify FILE...                   CI check for a GitOps repository
    headroom request PROJECT NAMESPACE RESOURCE=QUANTITY...
    headroom approve PROJECT [--id ID] [--yes]
    headroom status PROJECT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from headroom.changes import change_id, pending_change
from headroom.config import ConfigError, build_parser, config_from
from headroom.derivation import derive_namespace
from headroom.history.base import HistoryResult, PeakQuery
from headroom.planning import GOVERNED_ANNOTATION, QUOTA_NAME, observe_quota
from headroom.project_spec import (
    APPROVED_BY_ANNOTATION,
    APPROVED_CHANGE_ANNOTATION,
    GROUP,
    KIND,
    VERSION,
    SpecError,
    parse_project,
)
from headroom.quantity import QuantityError, format_quantity, parse_quantity


class CliError(Exception):
    pass


# --------------------------------------------------------------------------------------------- files


def load_projects(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: cannot read: {exc}") from exc
    projects = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not projects:
        raise CliError(f"{path}: no {KIND} in this file")
    return projects


def cmd_change_id(args: argparse.Namespace) -> int:
    for project in load_projects(Path(args.file)):
        spec = _parse(project, args.file)
        identifier = change_id(spec.name, spec.requested)
        print(identifier if identifier else f"{spec.name}: nothing requested", flush=True)
    return 0


def _parse(project: Mapping[str, Any], where: str) -> Any:
    try:
        return parse_project(project)
    except SpecError as exc:
        raise CliError(f"{where}: {exc}") from exc


def cmd_verify(args: argparse.Namespace) -> int:
    """Every approval annotation in the files must approve exactly its file's request."""
    problems = []
    checked = 0
    for file in args.files:
        try:
            projects = load_projects(Path(file))
        except CliError as exc:
            problems.append(str(exc))
            continue
        for project in projects:
            checked += 1
            try:
                spec = parse_project(project)
            except SpecError as exc:
                problems.append(f"{file}: {exc}")
                continue
            identifier = change_id(spec.name, spec.requested)
            approved = (spec.approved_change or "").strip()
            if approved and approved != identifier:
                wanted = identifier or "nothing (no change is requested)"
                problems.append(f"{file}: Project {spec.name}: {APPROVED_CHANGE_ANNOTATION} is {approved}, "
                                f"but the request in this file has id {wanted}; approve the current request "
                                f"(headroom change-id {file}) or remove the stale annotation")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {checked} Project(s), every approval matches its request")
    return 0


# --------------------------------------------------------------------------------------------- cluster


def _client() -> Any:
    import kubernetes

    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(client_configuration=config)
    except (kubernetes.config.ConfigException, FileNotFoundError):
        kubernetes.config.load_incluster_config(client_configuration=config)
    return kubernetes.client.ApiClient(config)


def _custom(client: Any) -> Any:
    import kubernetes

    return kubernetes.client.CustomObjectsApi(client)


def _get_project(client: Any, name: str) -> dict[str, Any]:
    import kubernetes

    try:
        return dict(_custom(client).get_cluster_custom_object(GROUP, VERSION, "projects", name))
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise CliError(f"Project {name} not found") from exc
        raise


def _whoami(client: Any) -> str:
    import kubernetes

    review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview())
    return str(review.status.user_info.username)


def cmd_request(args: argparse.Namespace) -> int:
    values: dict[str, str] = {}
    for item in args.values:
        resource, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"{item!r}: expected RESOURCE=QUANTITY, e.g. requests.cpu=40")
        try:
            parse_quantity(text)
        except QuantityError as exc:
            raise CliError(f"{resource}: {exc}") from exc
        values[resource.strip()] = text.strip()
    client = _client()
    project = _get_project(client, args.project)
    namespaces = list(project["spec"]["namespaces"])
    for ns in namespaces:
        if ns["name"] == args.namespace:
            ns["requested"] = {**(ns.get("requested") or {}), **values}
            break
    else:
        raise CliError(f"Project {args.project} does not govern namespace {args.namespace}")
    _custom(client).patch_cluster_custom_object(GROUP, VERSION, "projects", args.project,
                                                {"spec": {"namespaces": namespaces}})
    updated = {**project, "spec": {**project["spec"], "namespaces": namespaces}}
    spec = _parse(updated, args.project)
    print(f"requested {', '.join(f'{k}={v}' for k, v in values.items())} for {args.namespace}; "
          f"change id {change_id(spec.name, spec.requested)} awaits sign-off if it raises a quota")
    return 0


def _applied(client: Any, spec: Any) -> dict[str, dict[str, Any]]:
    import kubernetes

    core = kubernetes.client.CoreV1Api(client)
    applied: dict[str, dict[str, Any]] = {}
    for ns in spec.namespace_names:
        try:
            quota = core.read_namespaced_resource_quota(QUOTA_NAME, ns)
        except kubernetes.client.ApiException:
            continue
        seen = observe_quota(client.sanitize_for_serialization(quota))
        applied[ns] = seen.governed
    return applied


def cmd_approve(args: argparse.Namespace) -> int:
    client = _client()
    project = _get_project(client, args.project)
    spec = _parse(project, args.project)
    pending = pending_change(spec.name, spec.requested, _applied(client, spec))
    published = ((project.get("status") or {}).get("pendingChange") or {}).get("id")
    current = pending.id if pending else published
    if current is None:
        raise CliError(f"Project {args.project} has no pending change")
    if args.id and args.id != current:
        raise CliError(f"refusing: the pending change is now {current}, not {args.id}; "
                       "review the new request (headroom status) and approve that id")
    if pending is not None:
        print(f"change {pending.id} on Project {spec.name}:")
        for change in pending.changes:
            print(f"  {change.describe()}")
    if not args.yes and sys.stdin.isatty() and input("approve? [y/N] ").strip().lower() not in {"y", "yes"}:
        print("not approved")
        return 1
    who = args.approved_by or _whoami(client)
    # resourceVersion makes the write fail if the request changed since it was shown.
    patch = {"metadata": {"resourceVersion": project["metadata"]["resourceVersion"],
                          "annotations": {APPROVED_CHANGE_ANNOTATION: current, APPROVED_BY_ANNOTATION: who}}}
    _custom(client).patch_cluster_custom_object(GROUP, VERSION, "projects", args.project, patch)
    print(f"approved {current} as {who}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client()
    project = _get_project(client, args.project)
    status = project.get("status") or {}
    out = {"project": args.project, "phase": status.get("phase"), "namespaces": status.get("namespaces"),
           "pendingChange": status.get("pendingChange"), "lastAppliedChange": status.get("lastAppliedChange"),
           "history": status.get("history"), "alerts": status.get("alerts"),
           "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                          for c in status.get("conditions") or []]}
    if args.output == "json":
        print(json.dumps(out, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(out, sort_keys=False))
    else:
        print(f"Project {args.project}: {status.get('phase', 'unknown')}")
        for ns in status.get("namespaces") or []:
            print(f"  {ns['name']} ({ns.get('state')})")
            for resource in sorted(ns.get("hard") or ns.get("recommended") or {}):
                print(f"    {resource:<18} hard {ns.get('hard', {}).get(resource, '-'):>8}  "
                      f"used {ns.get('used', {}).get(resource, '-'):>8}  "
                      f"recommended {ns.get('recommended', {}).get(resource, '-'):>8}")
        pending = status.get("pendingChange")
        if pending:
            print(f"  pending {pending['id']} since {pending.get('since')}: {pending.get('reason', '')}")
        for entry in (status.get("history") or [])[-5:]:
            print(f"  applied {entry.get('id')} at {entry.get('appliedAt')} by {entry.get('approvedBy')}")
        for c in out["conditions"]:
            print(f"  {c['type']}={c['status']} ({c['reason']}): {c['message']}")
    return 0


# --------------------------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    used: dict[str, dict[str, Any]] = {}
    if args.file:
        projects = load_projects(Path(args.file))
    else:
        client = _client()
        if args.project:
            projects = [_get_project(client, args.project)]
        else:
            projects = _custom(client).list_cluster_custom_object(GROUP, VERSION, "projects")["items"]
        import kubernetes

        core = kubernetes.client.CoreV1Api(client)
        for project in projects:
            for ns in project.get("spec", {}).get("namespaces", []):
                try:
                    quota = core.read_namespaced_resource_quota(QUOTA_NAME, ns["name"])
                except kubernetes.client.ApiException:
                    continue
                seen = observe_quota(client.sanitize_for_serialization(quota))
                used[ns["name"]] = {"used": seen.used or {}, "hard": seen.governed,
                                    "governed": GOVERNED_ANNOTATION in seen.annotations}
    rows = []
    now = datetime.now(UTC)
    for project in projects:
        spec = _parse(project, args.file or project["metadata"]["name"])
        history = _history(config, spec, now)
        for ns in spec.namespace_names:
            current = used.get(ns, {})
            peaks = {r: history.peak(ns, r) for r in spec.quota.resources}
            derivations = derive_namespace(spec.quota.resources, peaks, current.get("used", {}),
                                           spec.quota.headroom_percent, spec.quota.minimum)
            for resource, d in derivations.items():
                hard = current.get("hard", {}).get(resource)
                rows.append({
                    "project": spec.name, "namespace": ns, "resource": resource,
                    "peak": _fmt(d.peak, resource), "headroom": f"{d.headroom_percent}%",
                    "floor": _fmt(d.floor, resource), "used": _fmt(d.used, resource),
                    "recommended": _fmt(d.recommended, resource), "hard": _fmt(hard, resource),
                    "why": d.reason + (f" (history: {history.error})" if history.error else ""),
                })
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(rows, sort_keys=False))
    else:
        _table(rows, ["project", "namespace", "resource", "peak", "headroom", "floor", "used",
                      "recommended", "hard", "why"])
    return 0


def _fmt(value: Any, resource: str) -> str:
    return "-" if value is None else format_quantity(value, resource)


def _history(config: Any, spec: Any, now: datetime) -> HistoryResult:
    from headroom.history.file import FileHistory
    from headroom.history.prometheus import DEFAULT_QUERIES, PrometheusHistory

    query = PeakQuery(frozenset(spec.namespace_names), frozenset(spec.quota.resources), spec.quota.lookback, now)
    if config.history_source == "prometheus":
        source: Any = PrometheusHistory(config.prometheus_url, step=config.prometheus_step,
                                        queries={**DEFAULT_QUERIES, **config.prometheus_queries})
    elif config.history_source == "file":
        source = FileHistory(config.history_file)
    else:
        return HistoryResult(error="the sampler's history lives in the running operator; "
                                   "use --history-source prometheus or file here")
    return asyncio.run(source.peaks(query))


def _table(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


# --------------------------------------------------------------------------------------------- main


def cmd_run(args: argparse.Namespace) -> int:
    from headroom.runtime import run

    try:
        config = config_from(args)
    except ConfigError as exc:
        raise CliError(f"invalid configuration: {exc}") from exc
    run(config)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="headroom", description="Quotas derived from history, changed with sign-off.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    build_parser(run)
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="show what each quota would be and why; changes nothing")
    plan.add_argument("project", nargs="?", help="one Project (default: all)")
    plan.add_argument("-f", "--file", help="a Project YAML file instead of the cluster")
    plan.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    build_parser(plan)
    plan.set_defaults(func=cmd_plan)

    cid = sub.add_parser("change-id", help="the id of a Project file's change request")
    cid.add_argument("file")
    cid.set_defaults(func=cmd_change_id)

    verify = sub.add_parser("verify", help="fail when an approval does not match its file's request")
    verify.add_argument("files", nargs="+")
    verify.set_defaults(func=cmd_verify)

    request = sub.add_parser("request", help="request absolute hard values for a namespace")
    request.add_argument("project")
    request.add_argument("namespace")
    request.add_argument("values", nargs="+", metavar="RESOURCE=QUANTITY")
    request.set_defaults(func=cmd_request)

    approve = sub.add_parser("approve", help="sign off the pending change of a Project")
    approve.add_argument("project")
    approve.add_argument("--id", help="refuse unless this is still the pending change")
    approve.add_argument("--approved-by", help="name for the audit trail (default: who you are)")
    approve.add_argument("--yes", action="store_true", help="do not ask")
    approve.set_defaults(func=cmd_approve)

    status = sub.add_parser("status", help="applied, pending, usage and history of a Project")
    status.add_argument("project")
    status.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    status.set_defaults(func=cmd_status)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
