"""The `headroom` command (also `kubectl headroom`): run the operator, plan, and govern changes.

    headroom run [flags]                      the operator
    headroom plan [PROJECT | -f FILE] [-o table|json|yaml]
    headroom change-id FILE                   the id a reviewer approves, computed offline
    headroom verify FILE|DIR...               CI check for a GitOps repository
    headroom review BASE HEAD | --git-range A..B   evidence for a pull request
    headroom request PROJECT [NAMESPACE] RESOURCE=QUANTITY...
    headroom approve PROJECT [--id ID] [--yes]
    headroom status PROJECT
    headroom capacity [--prometheus-url URL]  governed quotas against allocatable capacity

The commands that talk to the cluster take kubectl's global flags (--kubeconfig, --context,
-n/--namespace, --as, --as-group), so `kubectl headroom ...` behaves like the rest of kubectl, and
-v for details of an error. Errors are one line on stderr; the exit code says what kind (EXIT_*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from headroom.core.changes import Terms, change_id, tighter_terms
from headroom.core.forecast import describe as describe_forecast
from headroom.core.forecast import from_status
from headroom.core.history import DailyPeaks, HistoryResult, PeakQuery, decode
from headroom.core.names import (
    APPROVED_BY_ANNOTATION,
    APPROVED_CHANGE_ANNOTATION,
    DAILY_PEAKS_ANNOTATION,
    GROUP,
    KIND,
    PLURAL,
    QUOTA_NAME,
    REQUESTED_BY_ANNOTATION,
    VERSION,
)
from headroom.core.planning import Observed, Settings, observe_quota, plan_project, terms_in_force
from headroom.core.quantity import QuantityError, format_quantity, format_together, parse_quantity, resource_kind
from headroom.core.spec import ProjectSpec, SpecError, parse_project
from headroom.shell.config import ConfigError, OperatorConfig, build_parser, config_from

# Exit codes by kind of failure, so that scripts can tell "not allowed" from "try again" (README).
EXIT_OK = 0
EXIT_FAILED = 1  # a check found problems (verify), or the question was answered no
EXIT_USAGE = 2  # bad arguments or configuration, an unreadable file, no usable kubeconfig
EXIT_NOT_FOUND = 3  # the Project (or a namespace of it) does not exist
EXIT_FORBIDDEN = 4  # refused by RBAC or by the sign-off policy (401, 403)
EXIT_INVALID = 5  # the API server refused the object as invalid (422), or a file's Project is invalid
EXIT_CONFLICT = 6  # the Project is not in the state the command needs: nothing pending, another change
#                    pending, or it changed during the command (409)
EXIT_UNREACHABLE = 7  # the API server cannot be reached, timed out or failed (5xx, 429)
EXIT_INTERNAL = 70  # a bug in Headroom: -v shows the traceback


class CliError(Exception):
    """What failed and what to do, in one line; `detail` (the server's answer) is shown with -v."""

    def __init__(self, message: str, code: int = EXIT_USAGE, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _status_message(exc: Any) -> str:
    """The sentence the API server wrote (a Status object's message), not the HTTP dump around it."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return _one_line(str(message or exc.reason or f"HTTP {exc.status}"))


def api_error(action: str, exc: BaseException) -> CliError:
    """One line for a failed API call: what failed, the server's reason, and what to do."""
    import kubernetes

    if not isinstance(exc, kubernetes.client.ApiException):
        reason = _one_line(str(getattr(exc, "reason", None) or exc or type(exc).__name__))
        return CliError(
            f"cannot {action}: the API server cannot be reached ({reason}); check --kubeconfig and "
            "--context, and that the cluster is up",
            EXIT_UNREACHABLE,
            detail="".join(traceback.format_exception(exc)),
        )
    message = _status_message(exc)
    status = exc.status or 0
    hint = ""
    if status == 404:
        code = EXIT_NOT_FOUND
    elif status == 401:
        code, hint = (
            EXIT_FORBIDDEN,
            "your credentials were refused: log in again, or choose others with --kubeconfig/--context",
        )
    elif status == 403:
        code = EXIT_FORBIDDEN
        policy = re.search(r"ValidatingAdmissionPolicy .*? denied request: (.*)$", message)
        if policy:
            message = policy.group(1)  # the policy's own sentence already says what to do
        else:
            hint = "ask for access, or act as someone who has it (--as, --context)"
    elif status == 422:
        code, hint = EXIT_INVALID, "correct the value and try again"
    elif status == 409:
        code, hint = EXIT_CONFLICT, "it changed in the meantime: run the command again"
    elif status == 0:  # the client's own failure before any answer (e.g. TLS): nothing was reached
        code, hint = EXIT_UNREACHABLE, "check --kubeconfig and --context, and that the cluster is up"
    elif status == 429 or status >= 500:
        code, hint = EXIT_UNREACHABLE, "the API server is overloaded or failing: try again later"
    else:
        code = EXIT_USAGE
    return CliError(
        f"cannot {action}: {message}" + (f"; {hint}" if hint else ""),
        code,
        detail=f"HTTP {exc.status} {exc.reason}\n{exc.body}",
    )


@contextlib.contextmanager
def calling(action: str) -> Iterator[None]:
    """Turn a failed API call into one line that names `action` (e.g. "read Project payments")."""
    import kubernetes
    import urllib3

    try:
        yield
    except kubernetes.client.ApiException as exc:
        raise api_error(action, exc) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise api_error(action, exc) from exc


# --------------------------------------------------------------------------------------------- files


def is_project(doc: object) -> bool:
    """A Headroom Project, not just anything of kind Project (OpenShift has its own)."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return False
    api_version = doc.get("apiVersion")
    return api_version is None or str(api_version).split("/", 1)[0] == GROUP


def read_projects(path: Path) -> list[dict[str, Any]]:
    """The Projects in a YAML file; other documents (a kustomization, Namespaces) are not ours to judge."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        # A file that does not parse might hold a Project: it cannot be skipped as "not ours".
        raise CliError(f"{path}: cannot read: {_one_line(str(exc))}") from exc
    return [d for d in docs if is_project(d)]


def load_projects(path: Path) -> list[dict[str, Any]]:
    projects = read_projects(path)
    if not projects:
        raise CliError(f"{path}: no {KIND} in this file")
    return projects


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(paths: Sequence[str]) -> list[Path]:
    """Files as given, and the manifests under each directory given (a whole GitOps folder)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            # Hidden folders (.git, .github) hold no manifests to judge.
            found.extend(
                sorted(
                    f
                    for f in path.rglob("*")
                    if f.suffix in MANIFEST_SUFFIXES
                    and f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def cmd_change_id(args: argparse.Namespace) -> int:
    for project in load_projects(Path(args.file)):
        spec = _parse(project, args.file)
        identifier = change_id(spec)
        print(identifier if identifier else f"{spec.name}: nothing requested", flush=True)
    return 0


def _parse(project: Mapping[str, Any], where: str) -> Any:
    try:
        return parse_project(project)
    except SpecError as exc:
        raise CliError(f"{where}: {exc}", EXIT_INVALID) from exc


def cmd_verify(args: argparse.Namespace) -> int:
    """Every Project must be valid and every approval annotation must approve exactly its file's request.

    Files and documents that are not Projects (kustomization.yaml, Namespaces) are skipped, so the
    check runs over a whole GitOps folder.
    """
    problems = []
    checked = 0
    skipped = 0
    for path in manifest_files(args.files):
        file = str(path)
        try:
            projects = read_projects(path)
        except CliError as exc:
            problems.append(str(exc))
            continue
        skipped += not projects
        for project in projects:
            checked += 1
            try:
                spec = parse_project(project)
            except SpecError as exc:
                problems.append(f"{file}: {exc}")
                continue
            identifier = change_id(spec)
            approved = (spec.approved_change or "").strip()
            if approved and approved != identifier:
                wanted = identifier or "nothing (no change is requested)"
                problems.append(
                    f"{file}: Project {spec.name}: {APPROVED_CHANGE_ANNOTATION} is {approved}, "
                    f"but the request in this file has id {wanted}; approve the current request "
                    f"(headroom change-id {file}) or remove the stale annotation"
                )
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    if not checked:
        print(f"error: no {KIND} in {', '.join(args.files)}", file=sys.stderr)
        return 1
    others = f" ({skipped} file(s) without a Project skipped)" if skipped else ""
    print(f"ok: {checked} Project(s), every approval matches its request{others}")
    return 0


# --------------------------------------------------------------------------------------------- review

Side = dict[str, tuple[str, Any]]  # Project name -> (file, ProjectSpec, or why it is invalid)


def _collect(documents: Sequence[tuple[str, str]], keep_invalid: bool) -> Side:
    """Projects by name from (file, YAML text) pairs; other documents are skipped."""
    found: Side = {}
    for file, text in documents:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            if keep_invalid:
                found[f"({file})"] = (file, f"{file}: cannot read: {_one_line(str(exc))}")
            continue
        for doc in docs:
            if not is_project(doc):
                continue
            name = str((doc.get("metadata") or {}).get("name") or f"({file})")
            try:
                found[name] = (file, parse_project(doc))
            except SpecError as exc:
                if keep_invalid:
                    found[name] = (file, f"{file}: {exc}")
    return found


def _read_side(path: str) -> list[tuple[str, str]]:
    files = manifest_files([path])
    if not Path(path).exists():
        raise CliError(f"{path}: no such file or directory")
    try:
        return [(str(f), f.read_text()) for f in files]
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _git(*argv: str) -> str:
    import subprocess

    try:
        done = subprocess.run(["git", *argv], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CliError(f"cannot run git: {exc}") from exc
    if done.returncode != 0:
        raise CliError(f"git {' '.join(argv)}: {_one_line(done.stderr) or 'failed'}")
    return done.stdout


def _git_sides(spec: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The manifests a range changes, as they were where the branch began and as they are at its end.

    A..B compares B with the merge base of A and B, as a pull request shows it: what landed on A
    since the branch began is not part of the change.
    """
    first, sep, last = spec.partition("..")
    if not sep or not first or not last or last.startswith("."):
        raise CliError(f"--git-range {spec!r}: expected A..B, e.g. origin/main..HEAD")
    base = _git("merge-base", first, last).strip()
    changed = [
        name
        for name in _git("diff", "--name-only", "-z", base, last).split("\0")
        if name and Path(name).suffix in MANIFEST_SUFFIXES
    ]
    before: list[tuple[str, str]] = []
    after: list[tuple[str, str]] = []
    present = {
        rev: set(_git("ls-tree", "-r", "--name-only", "-z", rev, "--", *changed).split("\0")) if changed else set()
        for rev in (base, last)
    }
    for name in changed:
        if name in present[base]:
            before.append((name, _git("show", f"{base}:{name}")))
        if name in present[last]:
            after.append((name, _git("show", f"{last}:{name}")))
    return before, after


def _history_evidence(args: argparse.Namespace, base: Side, head: Side) -> tuple[dict[tuple[str, str], Any], str]:
    """Peaks, latest use and recommendations from --history-file or --prometheus-url."""
    from headroom.core.review import evidence_from_history

    specs: dict[str, ProjectSpec] = {n: v[1] for n, v in {**base, **head}.items() if isinstance(v[1], ProjectSpec)}
    in_force = {}
    for name, spec in specs.items():
        before = base.get(name)
        approved = Terms.of(before[1]) if before and isinstance(before[1], ProjectSpec) else Terms.of(spec)
        in_force[name] = tighter_terms(Terms.of(spec), approved, "Enforce")[0]
    now = datetime.now(UTC)
    peaks: dict[tuple[str, str], Any] = {}
    used: dict[tuple[str, str], Any] = {}
    daily: dict[tuple[str, str], Any] = {}
    source = _review_source(args)
    for name, spec in specs.items():
        terms = in_force[name]
        resources = frozenset({*terms.resources, *(r for ns in spec.namespaces for r in ns.requested)})
        query = PeakQuery(frozenset(spec.namespace_names), resources, terms.lookback, now)
        result = asyncio.run(source.peaks(query))
        if result.error:
            raise CliError(f"history for Project {name}: {result.error}", EXIT_UNREACHABLE)
        peaks.update(result.peaks)
        daily.update(result.daily)
        used.update(_current_use(args, query))
    where = f"history file `{args.history_file}`" if args.history_file else f"Prometheus at {args.prometheus_url}"
    return evidence_from_history(list(specs.values()), peaks, used, in_force, daily, now), where


def _review_source(args: argparse.Namespace) -> Any:
    if args.history_file:
        from headroom.shell.history.file import FileHistory

        return FileHistory(Path(args.history_file))
    from headroom.shell.history.prometheus import PrometheusHistory

    return PrometheusHistory(args.prometheus_url)


def _current_use(args: argparse.Namespace, query: PeakQuery) -> dict[tuple[str, str], Any]:
    """Use now: the newest sample of a history file, or the namespace totals Prometheus has now."""
    if args.history_file:
        from headroom.shell.history.file import load_samples

        newest: dict[tuple[str, str], tuple[datetime, Any]] = {}
        for at, namespace, resource, value in load_samples(Path(args.history_file)):
            key = (namespace, resource)
            wanted = namespace in query.namespaces and resource in query.resources and at <= query.now
            if wanted and (key not in newest or at >= newest[key][0]):
                newest[key] = (at, value)
        return {key: value for key, (_, value) in newest.items()}
    return asyncio.run(_prometheus_now(args.prometheus_url, query))


async def _prometheus_now(url: str, query: PeakQuery) -> dict[tuple[str, str], Any]:
    import aiohttp

    from headroom.shell.history.prometheus import DEFAULT_QUERIES, query_for

    pattern = "|".join(sorted(query.namespaces))
    found: dict[tuple[str, str], Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for resource in sorted(query.resources):
            template = query_for(resource, DEFAULT_QUERIES)
            if template is None:
                continue
            body = {"query": template.format(namespaces=pattern), "time": f"{query.now.timestamp():.3f}"}
            try:
                async with session.post(f"{url.rstrip('/')}/api/v1/query", data=body) as resp:
                    answer = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue  # current use unknown: shown as "-", never as zero
            for sample in (answer.get("data") or {}).get("result") or []:
                with contextlib.suppress(KeyError, IndexError, TypeError, ArithmeticError):
                    # Float sums carry noise below a millicore or a byte: drop it, as the peaks do.
                    step = Decimal("0.001") if resource_kind(resource) == "cpu" else Decimal(1)
                    value = Decimal(sample["value"][1]).quantize(step)
                    found[(sample["metric"]["namespace"], resource)] = value
    return found


def _cluster_evidence(args: argparse.Namespace, names: Sequence[str]) -> dict[tuple[str, str], Any]:
    """What the live Projects publish in status (peak, use, recommendation, forecast, what is governed)."""
    from headroom.core.review import figures_from_status

    client = _client(args)
    found: dict[tuple[str, str], Any] = {}
    for name in names:
        try:
            project = _get_project(client, name)
        except CliError as exc:
            if exc.code == EXIT_NOT_FOUND:
                continue  # a new Project: nothing is governed yet
            raise
        found.update(figures_from_status(project.get("status") or {}, parse_quantity))
    return found


def cmd_review(args: argparse.Namespace) -> int:
    """What a pull request changes in Projects, with the evidence, as a comment or JSON. Offline by default."""
    from headroom.core.review import render_json, render_markdown, review

    if args.git_range:
        if args.paths:
            raise CliError("give either BASE HEAD or --git-range A..B, not both")
        before, after = _git_sides(args.git_range)
    elif len(args.paths) == 2:
        before, after = _read_side(args.paths[0]), _read_side(args.paths[1])
    else:
        raise CliError("give BASE HEAD (two versions of a Project file, or two folders) or --git-range A..B")
    if sum(bool(x) for x in (args.history_file, args.prometheus_url, args.from_cluster)) > 1:
        raise CliError("give one evidence source: --history-file, --prometheus-url or --from-cluster")
    base, head = _collect(before, keep_invalid=False), _collect(after, keep_invalid=True)
    evidence: dict[tuple[str, str], Any] = {}
    source = "none (offline; pass --history-file, --prometheus-url or --from-cluster)"
    if args.from_cluster:
        evidence = _cluster_evidence(args, sorted({*base, *head}))
        source = "the live Projects' status"
    elif args.history_file or args.prometheus_url:
        evidence, source = _history_evidence(args, base, head)
    result = review(base, head, evidence, bool(args.from_cluster), source)
    print(render_json(result) if args.output == "json" else render_markdown(result), end="")
    if any(p.kind == "invalid" for p in result.projects):
        return EXIT_INVALID
    return EXIT_FAILED if result.failed else EXIT_OK


# --------------------------------------------------------------------------------------------- cluster


def _client(args: argparse.Namespace) -> Any:
    """A client as kubectl would make it from the same flags: kubeconfig, context, impersonation."""
    import kubernetes

    kubeconfig = getattr(args, "kubeconfig", None)
    context = getattr(args, "context", None)
    user = getattr(args, "as_user", None)
    groups = list(getattr(args, "as_group", None) or [])
    if groups and not user:
        raise CliError("--as-group needs --as: the API server impersonates groups only together with a user")
    try:
        client = api_client(kubeconfig, context)
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CliError(
            f"no usable kubeconfig ({where}: {_one_line(str(exc))}); pass --kubeconfig and "
            "--context, or set KUBECONFIG",
            EXIT_USAGE,
        ) from exc
    if user:
        client.set_default_header("Impersonate-User", user)
    if groups:
        _impersonate_groups(client, groups)
    return client


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """Credentials the way kubectl and the operator find them (headroom.shell.apiclient).

    An explicit kubeconfig or context first, then $KUBECONFIG, then the Pod's ServiceAccount when
    running in a cluster, then ~/.kube/config (controller-runtime's order). A missing or broken
    kubeconfig that was asked for is an error, never silently replaced by another identity.
    """
    import kubernetes  # imported when needed: offline commands stay quick

    config = kubernetes.client.Configuration()
    # The client library reads $KUBECONFIG once, at import: read it now.
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if not (path or context) and "KUBERNETES_SERVICE_HOST" in os.environ:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=config
        )
    return kubernetes.client.ApiClient(config)


def _impersonate_groups(client: Any, groups: Sequence[str]) -> None:
    """One Impersonate-Group header per group, as kubectl sends them.

    The generated client keeps headers in a plain dict (one value per name), and the API server reads
    a comma-joined value as a single group; so the header lines are added where the request is sent.
    """
    import urllib3

    manager = client.rest_client.pool_manager
    send = manager.request

    def request(method: str, url: str, *args: Any, headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        lines = urllib3.HTTPHeaderDict(dict(headers or {}))
        for group in groups:
            lines.add("Impersonate-Group", group)
        return send(method, url, *args, headers=lines, **kwargs)

    manager.request = request


def _custom(client: Any) -> Any:
    import kubernetes

    return kubernetes.client.CustomObjectsApi(client)


def _get_project(client: Any, name: str) -> dict[str, Any]:
    import kubernetes

    try:
        with calling(f"read Project {name}"):
            return dict(_custom(client).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
    except CliError as exc:
        if isinstance(exc.__cause__, kubernetes.client.ApiException) and exc.__cause__.status == 404:
            raise CliError(f"Project {name} not found (kubectl get projects lists them)", EXIT_NOT_FOUND) from exc
        raise


def _whoami(client: Any) -> str:
    import kubernetes

    with calling("find out who you are (SelfSubjectReview)"):
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview()
        )
    user = review.status.user_info if review.status else None
    if user is None or not user.username:
        raise CliError("the API server did not say who you are (SelfSubjectReview answered without a user)")
    return str(user.username)


def cmd_request(args: argparse.Namespace) -> int:
    # NAMESPACE may be left out in favour of -n/--namespace, as kubectl users are used to.
    items = list(args.values)
    if items and "=" not in items[0]:
        args.namespace = items.pop(0)
    elif not getattr(args, "namespace", None):
        raise CliError("which namespace? give it after the Project, or with -n NAMESPACE")
    if not items:
        raise CliError("nothing to request: give RESOURCE=QUANTITY, e.g. requests.cpu=40")
    values: dict[str, str] = {}
    for item in items:
        resource, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"{item!r}: expected RESOURCE=QUANTITY, e.g. requests.cpu=40")
        try:
            parse_quantity(text)
        except QuantityError as exc:
            raise CliError(f"{resource}: {exc}") from exc
        values[resource.strip()] = text.strip()
    client = _client(args)
    project = _get_project(client, args.project)
    namespaces = list(project["spec"]["namespaces"])
    for ns in namespaces:
        if ns["name"] == args.namespace:
            ns["requested"] = {**(ns.get("requested") or {}), **values}
            break
    else:
        raise CliError(f"Project {args.project} does not govern namespace {args.namespace}", EXIT_NOT_FOUND)
    # The admission policy wants the requester's own name on every change of the request: it is how
    # Headroom knows that whoever signs the change off is another person.
    requester = _whoami(client)
    with calling(f"request a change of Project {args.project}"):
        _custom(client).patch_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            args.project,
            {"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: requester}}, "spec": {"namespaces": namespaces}},
        )
    updated = {**project, "spec": {**project["spec"], "namespaces": namespaces}}
    spec = _parse(updated, args.project)
    print(
        f"requested {', '.join(f'{k}={v}' for k, v in values.items())} for {args.namespace}; "
        f"change id {change_id(spec)} awaits sign-off if it raises a quota"
    )
    return 0


def expand_change_id(given: str, pending: str) -> str:
    """The full pending id from its short form: `sha256:8d9d1a2b`, `8d9d1a2b`, or as docs abbreviate it,
    `sha256:8d9d...`. Refuses an id that is not a prefix of the pending change (CliError)."""
    text = given.strip().lower().rstrip(".…")
    digits = text.removeprefix("sha256:")
    if len(digits) < 4 or any(ch not in "0123456789abcdef" for ch in digits):
        raise CliError(
            f"--id {given!r} is not a change id: give the pending id, or at least its first 4 hex "
            f"digits (e.g. {pending[:15]})"
        )
    if not pending.removeprefix("sha256:").startswith(digits):
        raise CliError(
            f"refusing: {given} is not the pending change; the pending change is now {pending}: "
            "review it (headroom status) and approve that id",
            EXIT_CONFLICT,
        )
    return pending


def _together(texts: Sequence[Any], resource: str) -> list[str]:
    """Quantities from status, shown side by side in one unit ("4800m" and "6000m", not "4800m" and "6");
    a text that does not parse is shown as it is."""
    try:
        values = [None if t in (None, "-") else parse_quantity(str(t)) for t in texts]
    except QuantityError:
        return ["-" if t is None else str(t) for t in texts]
    return format_together(values, resource)


def _describe(entry: Mapping[str, Any]) -> str:
    resource = str(entry.get("resource"))
    where = f"{entry.get('namespace')} {resource}"
    before, after = _together([entry.get("from"), entry.get("to")], resource)
    if entry.get("from") is None:
        return f"{where} to {after} (currently unlimited)"
    return f"{where} from {before} to {after}"


def cmd_approve(args: argparse.Namespace) -> int:
    client = _client(args)
    project = _get_project(client, args.project)
    spec = _parse(project, args.project)
    # The diff and the id come from the Project's own status, written by Headroom from the quotas it
    # governs: the CLI never reconstructs them from objects the reviewer may not be allowed to read.
    pending = (project.get("status") or {}).get("pendingChange") or {}
    published = pending.get("id")
    requested = change_id(spec)
    if not published:
        raise CliError(
            f"Project {spec.name} has no pending change: what it asks for is in force, or Headroom "
            f"has not looked at its latest edit yet (headroom status {spec.name})",
            EXIT_CONFLICT,
        )
    if published != requested:
        raise CliError(
            f"refusing: the request of Project {spec.name} changed (now {requested}) after Headroom "
            f"published the pending change {published}; wait a moment for its status and run the "
            "command again",
            EXIT_CONFLICT,
        )
    if args.id:
        expand_change_id(args.id, published)
    print(f"change {published} on Project {spec.name}:")
    for entry in pending.get("diff") or []:
        print(f"  {_describe(entry)}")
    for entry in pending.get("loosens") or []:  # claims and settings the change loosens
        print(f"  {entry.get('field')} from {entry.get('from')} to {entry.get('to')}")
    if not args.yes and sys.stdin.isatty() and input("approve? [y/N] ").strip().lower() not in {"y", "yes"}:
        print("not approved")
        return EXIT_FAILED
    who = args.approved_by or _whoami(client)
    # resourceVersion makes the write fail if the request changed since it was shown.
    patch = {
        "metadata": {
            "resourceVersion": project["metadata"]["resourceVersion"],
            "annotations": {APPROVED_CHANGE_ANNOTATION: published, APPROVED_BY_ANNOTATION: who},
        }
    }
    with calling(f"approve {published} on Project {spec.name}"):
        _custom(client).patch_cluster_custom_object(GROUP, VERSION, PLURAL, args.project, patch)
    print(f"approved {published} as {who}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    project = _get_project(client, args.project)
    status = project.get("status") or {}
    out = {
        "project": args.project,
        "phase": status.get("phase"),
        "namespaces": status.get("namespaces"),
        "pendingChange": status.get("pendingChange"),
        "lastAppliedChange": status.get("lastAppliedChange"),
        "history": status.get("history"),
        "alerts": status.get("alerts"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []
        ],
    }
    if args.output == "json":
        print(json.dumps(out, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(out, sort_keys=False))
    else:
        _print_status(args.project, status, out["conditions"])
    return 0


def _forecast_text(entry: Mapping[str, Any], resource: str, now: datetime) -> str:
    """A namespace's published forecast for people ("full in ~9 days (2026-12-11) at +400m/day"); "-" if none."""
    hard_text = (entry.get("hard") or entry.get("recommended") or {}).get(resource)
    try:
        hard = parse_quantity(str(hard_text)) if hard_text is not None else None
    except QuantityError:
        hard = None
    trend = from_status((entry.get("forecast") or {}).get(resource), hard)
    return describe_forecast(resource, trend, now) if trend is not None else "-"


def _print_status(project: str, status: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> None:
    now = datetime.now(UTC)
    print(f"Project {project}: {status.get('phase', 'unknown')}")
    for ns in status.get("namespaces") or []:
        print(f"  {ns['name']} ({ns.get('state')})")
        if ns.get("expiresAt"):
            print(f"    raise expires at {ns['expiresAt']} (then withdrawn without sign-off)")
        elif (ns.get("raise") or {}).get("state") == "Withdrawn":
            print(f"    raise ended at {ns['raise'].get('until')}, withdrawn at {ns['raise'].get('withdrawnAt')}")
        if ns.get("expiredRequest"):
            print(f"    {ns['expiredRequest'].get('message')}")
        rows = []
        for resource in sorted(ns.get("hard") or ns.get("recommended") or {}):
            hard, used, recommended = _together(
                [(ns.get(k) or {}).get(resource) for k in ("hard", "used", "recommended")], resource
            )
            trend = _forecast_text(ns, resource, now)
            rows.append(
                {"resource": resource, "hard": hard, "used": used, "recommended": recommended, "forecast": trend}
            )
        if rows:
            columns = ["resource", "hard", "used", "recommended"]
            rows = _one_cpu_unit(rows, columns[1:])
            _table(rows, [*columns, "forecast"] if any(r["forecast"] != "-" for r in rows) else columns, indent="    ")
    pending = status.get("pendingChange") or {}
    full = str(pending.get("id") or "")
    if full:
        # The full id once; the texts below name it again, and there its short form is enough.
        print(f"  pending change {full} since {pending.get('since')}")
        for entry in pending.get("diff") or []:
            print(f"    {_describe(entry)}")
        for entry in pending.get("loosens") or []:
            print(f"    {entry.get('field')} from {entry.get('from')} to {entry.get('to')}")
    short = str(pending.get("shortId") or full[:19])
    for entry in (status.get("history") or [])[-5:]:
        if str(entry.get("id")).startswith("withdrawn:"):  # a raise that ended (core/expiry.py)
            print(f"  withdrawn {entry.get('changeId')} at {entry.get('appliedAt')}: its until had come")
            continue
        print(f"  applied {entry.get('id')} at {entry.get('appliedAt')} by {entry.get('approvedBy')}")
    for c in conditions:
        message = str(c.get("message") or "")
        print(f"  {c['type']}={c['status']} ({c['reason']}): {message.replace(full, short) if full else message}")


# --------------------------------------------------------------------------------------------- plan


SAMPLER_HINT = "pass --history-source=prometheus --prometheus-url=URL or --history-source=file --history-file=FILE"


def cmd_plan(args: argparse.Namespace) -> int:
    # -n/--namespace and -v are kubectl's here (which namespace to show; error details), not the
    # operator's own --namespace and --verbose.
    given = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in {"namespace", "verbose"}})
    try:
        config = config_from(given)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    only = getattr(args, "namespace", None)
    quotas: dict[str, dict[str, Any]] = {}
    if args.file:
        if config.history_source == "sampler":
            # The sampler's peaks are kept on the quotas in the cluster, which a file does not have.
            raise CliError(
                f"plan -f needs a history source: {SAMPLER_HINT} (the sampler's peaks live on the "
                "quotas in the cluster: run plan without -f to use them)"
            )
        # A file is planned as the platform would create it: a new Project.
        projects = [
            {**p, "metadata": {"generation": 1, **(p.get("metadata") or {})}} for p in load_projects(Path(args.file))
        ]
    else:
        client = _client(args)
        if args.project:
            projects = [_get_project(client, args.project)]
        else:
            with calling("list Projects"):
                projects = _custom(client).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        for project in projects:
            for ns in project.get("spec", {}).get("namespaces", []):
                if only and ns["name"] != only:
                    continue
                quota = _read_quota(client, ns["name"], config.history_source == "sampler")
                if quota is not None:
                    quotas[ns["name"]] = quota
    settings = Settings(
        default_enforcement=config.enforcement_default,
        auto_approve_within_recommendation=config.auto_approve_within_recommendation,
        protected_namespaces=frozenset({*config.protected_namespaces, config.namespace}),
    )
    rows = []
    now = datetime.now(UTC)
    for project in projects:
        spec = _parse(project, args.file or project["metadata"]["name"])
        if only and only not in spec.namespace_names:
            continue
        rows.extend(_plan_rows(project, spec, quotas, config, settings, now, only))
    if only and not rows:
        raise CliError(f"no Project governs namespace {only}", EXIT_NOT_FOUND)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(rows, sort_keys=False))
    else:
        columns = ["project", "namespace", "resource", "peak", "headroom", "floor", "used", "recommended", "hard"]
        if any(r["forecast"] != "-" for r in rows):
            columns.append("forecast")  # only where history has days to make a trend of
        _table(_one_cpu_unit([_for_people(r) for r in rows], _PLAN_AMOUNTS), [*columns, "why"])
    return 0


def _plan_rows(
    project: Mapping[str, Any],
    spec: ProjectSpec,
    quotas: Mapping[str, Mapping[str, Any]],
    config: OperatorConfig,
    settings: Settings,
    now: datetime,
    only: str | None,
) -> list[dict[str, str]]:
    """What the operator would decide for one Project, by the planner the operator uses."""
    seen = {ns: observe_quota(q) for ns, q in quotas.items() if ns in spec.namespace_names}
    terms = terms_in_force(spec, project, settings)
    history = _history(
        config, terms, spec, now, {ns: decode(q.annotations.get(DAILY_PEAKS_ANNOTATION)) for ns, q in seen.items()}
    )
    observed = Observed(
        project_uid=str(project.get("metadata", {}).get("uid", "")),
        namespaces_present=frozenset(spec.namespace_names),
        quotas=seen,
        limitranges={},
        claimed_by_others={},
        peaks=history.peaks,
        history_error=history.error,
        history_partial=history.partial,
        daily=history.daily,
        day_offsets=history.day_offsets,
    )
    plan = plan_project(spec, project, observed, settings, now)
    entries = {e["name"]: e for e in plan.status.get("namespaces") or []}
    rows = []
    for ns in spec.namespace_names:
        if only and ns != only:
            continue
        derivations = plan.derivations.get(ns)
        if derivations is None:
            rows.append(
                {
                    "project": spec.name,
                    "namespace": ns,
                    "resource": "-",
                    "peak": "-",
                    "headroom": "-",
                    "floor": "-",
                    "used": "-",
                    "recommended": "-",
                    "hard": "-",
                    "why": f"{entries.get(ns, {}).get('state', '?')}: {entries.get(ns, {}).get('message', '')}",
                    "forecast": "-",
                }
            )
            continue
        governed = plan.governed.get(ns) or (seen[ns].governed if ns in seen else {})
        for resource, d in derivations.items():
            rows.append(
                {
                    "project": spec.name,
                    "namespace": ns,
                    "resource": resource,
                    "peak": _fmt(d.peak, resource),
                    "headroom": f"{d.headroom_percent}%",
                    "floor": _fmt(d.floor, resource),
                    "used": _fmt(d.used, resource),
                    "recommended": _fmt(d.recommended, resource),
                    "hard": _fmt(governed.get(resource), resource),
                    "why": d.reason + (f" (history: {history.error})" if history.error else ""),
                    "forecast": describe_forecast(resource, trend, now)
                    if (trend := plan.forecasts.get(ns, {}).get(resource))
                    else "-",
                }
            )
    return rows


def _read_quota(client: Any, namespace: str, for_sampler: bool) -> dict[str, Any] | None:
    """Headroom's quota in a namespace as a plain dict; None when it has none yet. A quota that cannot
    be read is an error, never taken for a missing one (that would show floors as the plan)."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(client)
    try:
        with calling(f"read ResourceQuota {QUOTA_NAME} in {namespace}"):
            return dict(client.sanitize_for_serialization(core.read_namespaced_resource_quota(QUOTA_NAME, namespace)))
    except CliError as exc:
        cause = exc.__cause__
        if isinstance(cause, kubernetes.client.ApiException) and cause.status == 404:
            return None
        if for_sampler and exc.code == EXIT_FORBIDDEN:
            raise CliError(
                f"{exc}; the sampler's peaks are kept on the quotas, so plan reads them there, or {SAMPLER_HINT}",
                exc.code,
                exc.detail,
            ) from cause
        raise


def _fmt(value: Any, resource: str) -> str:
    return "-" if value is None else format_quantity(value, resource)


def _history(
    config: OperatorConfig, terms: Terms, spec: ProjectSpec, now: datetime, daily_peaks: Mapping[str, DailyPeaks]
) -> HistoryResult:
    """The peaks the operator would get: the same source, asked for the terms in force."""
    from headroom.shell.history import history_source

    query = PeakQuery(frozenset(spec.namespace_names), frozenset(terms.resources), terms.lookback, now)
    source = history_source(config, lambda namespace: daily_peaks.get(namespace) or {})
    return asyncio.run(source.peaks(query))


def _table(rows: Sequence[Mapping[str, str]], columns: Sequence[str], indent: str = "") -> None:
    # Widths from the content, so a long resource name (hugepages-2Mi, a storage class) shifts the
    # columns instead of breaking them.
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print(indent + "  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print(indent + "  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


_PLAN_AMOUNTS = ("peak", "floor", "used", "recommended", "hard")


def _one_cpu_unit(rows: list[dict[str, str]], columns: Sequence[str]) -> list[dict[str, str]]:
    """Cpu in one unit across a table's rows (requests.cpu and limits.cpu both in cores, or both in
    millicores), so that a column reads down at a glance; each row's own unit otherwise."""
    cpu = [r for r in rows if r.get("resource", "-") != "-" and resource_kind(r["resource"]) == "cpu"]
    if len(cpu) < 2:
        return rows
    try:
        values = [None if r[c] in ("-", "") else parse_quantity(r[c]) for r in cpu for c in columns]
    except QuantityError:
        return rows  # a text that is not an amount: leave the rows as they are
    texts = iter(format_together(values, "requests.cpu"))
    for row in cpu:
        row.update({c: next(texts) for c in columns})
    return rows


def _for_people(row: Mapping[str, str]) -> dict[str, str]:
    """A plan row as the table shows it: its amounts in one unit ("~1177.4Mi" beside "1413Mi", not a byte
    count); -o json and yaml keep the exact values."""
    if row["resource"] == "-":
        return dict(row)
    shown = _together([row[c] for c in _PLAN_AMOUNTS], row["resource"])
    return {**row, **dict(zip(_PLAN_AMOUNTS, shown, strict=True))}


# --------------------------------------------------------------------------------------------- main


def cmd_run(args: argparse.Namespace) -> int:
    # Never the kubernetes client library here (headroom/cli.py keeps it out of the operator).
    import kopf

    from headroom.shell.apiclient import UnsupportedCredentials
    from headroom.shell.main import run

    try:
        config = config_from(args)
    except ConfigError as exc:
        raise CliError(f"invalid configuration: {exc}") from exc
    try:
        run(config)
    except UnsupportedCredentials as exc:
        raise CliError(f"cannot log in to the cluster: {exc}") from exc
    except kopf.LoginError as exc:
        raise CliError(
            f"cannot find the cluster ({_one_line(str(exc))}): run in a Pod with a ServiceAccount, or set KUBECONFIG"
        ) from exc
    return 0


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    """kubectl's global flags, accepted before or after the subcommand (as kubectl plugins do).

    SUPPRESS as default: a value given before the subcommand is not reset by the subcommand's own
    default afterwards.
    """
    group = parser.add_argument_group("cluster access (as kubectl)")
    group.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)",
    )
    group.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    group.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="request: the namespace to change; plan: show only this namespace",
    )
    group.add_argument(
        "--as", dest="as_user", default=argparse.SUPPRESS, metavar="USER", help="act as this user (impersonation)"
    )
    group.add_argument(
        "--as-group",
        dest="as_group",
        action="append",
        default=argparse.SUPPRESS,
        metavar="GROUP",
        help="act as a member of this group; may repeat (needs --as)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, also show the server's answer and the traceback",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="headroom",
        description="Quotas derived from history, changed with sign-off.",
        epilog="exit codes: 0 ok, 1 check failed or declined, 2 usage or configuration, 3 not found, "
        "4 forbidden, 5 invalid, 6 conflict (nothing pending, another change pending, changed "
        "meanwhile), 7 API server unreachable or failing, 70 internal error",
    )
    _cluster_flags(top)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    build_parser(run)
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="show what each quota would be and why; changes nothing")
    plan.add_argument("project", nargs="?", help="one Project (default: all)")
    plan.add_argument("-f", "--file", help="a Project YAML file instead of the cluster")
    plan.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    build_parser(plan, exclude={"--namespace", "--verbose"})
    _cluster_flags(plan)
    plan.set_defaults(func=cmd_plan)

    cid = sub.add_parser("change-id", help="the id of a Project file's change request")
    cid.add_argument("file")
    cid.set_defaults(func=cmd_change_id)

    verify = sub.add_parser(
        "verify", help="fail on an invalid Project or an approval that does not match its file's request"
    )
    verify.add_argument(
        "files", nargs="+", metavar="FILE|DIR", help="manifests, or folders of them; what is not a Project is skipped"
    )
    verify.set_defaults(func=cmd_verify)

    rev = sub.add_parser(
        "review",
        help="what a pull request changes in Projects, with evidence and how to approve it (Markdown or JSON)",
        usage="headroom review (BASE HEAD | --git-range A..B) [--history-file F | --prometheus-url URL | "
        "--from-cluster] [-o markdown|json]",
    )
    rev.add_argument("paths", nargs="*", metavar="BASE HEAD", help="two versions of a Project file, or two folders")
    rev.add_argument("--git-range", metavar="A..B", help="the manifests changed from the merge base of A and B to B")
    rev.add_argument("--history-file", metavar="FILE", help="evidence from a history file (CSV or JSON samples)")
    rev.add_argument("--prometheus-url", metavar="URL", help="evidence from Prometheus (kube-state-metrics series)")
    rev.add_argument(
        "--from-cluster", action="store_true", help="evidence from the live Projects' status (needs a kubeconfig)"
    )
    rev.add_argument("-o", "--output", choices=["markdown", "json"], default="markdown")
    _cluster_flags(rev)
    rev.set_defaults(func=cmd_review)

    request = sub.add_parser(
        "request",
        help="request absolute hard values for a namespace",
        usage="headroom request PROJECT [NAMESPACE | -n NAMESPACE] RESOURCE=QUANTITY...",
    )
    request.add_argument("project")
    request.add_argument("values", nargs="+", metavar="[NAMESPACE] RESOURCE=QUANTITY")
    _cluster_flags(request)
    request.set_defaults(func=cmd_request)

    approve = sub.add_parser("approve", help="sign off the pending change of a Project")
    approve.add_argument("project")
    approve.add_argument(
        "--id",
        help="refuse unless this is still the pending change (the full id, or its first hex digits: sha256:8d9d1a2b)",
    )
    approve.add_argument("--approved-by", help="name for the audit trail (default: who you are)")
    approve.add_argument("--yes", action="store_true", help="do not ask")
    _cluster_flags(approve)
    approve.set_defaults(func=cmd_approve)

    status = sub.add_parser("status", help="applied, pending, usage and history of a Project")
    status.add_argument("project")
    status.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    _cluster_flags(status)
    status.set_defaults(func=cmd_status)

    # Imported here: that module builds on this one's helpers (client, errors, tables).
    from headroom.shell.capacity_cli import add_parser as add_capacity

    add_capacity(sub, _cluster_flags)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # `run` has the operator's --verbose ("true" when given); the other commands kubectl's -v.
    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = exc if isinstance(exc, CliError) else _unexpected(exc)
        print(f"error: {error}", file=sys.stderr)
        if verbose:
            if error.detail:
                print(error.detail, file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        return error.code


def _unexpected(exc: Exception) -> CliError:
    """An error no command turned into a sentence: still one line, the traceback only with -v."""
    import kubernetes
    import urllib3

    if isinstance(exc, kubernetes.client.ApiException | urllib3.exceptions.HTTPError | OSError):
        return api_error("talk to the API server", exc)
    return CliError(
        f"{type(exc).__name__}: {_one_line(str(exc))} (a bug in Headroom; -v shows the traceback)", EXIT_INTERNAL
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
