"""The tools a reader of the docs has at hand (the headroom CLI, make, kubectl), run as subprocesses."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.docs.markdown import REPO

ENV = {**os.environ, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60)


def headroom(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`headroom ARGS`, as `python -m headroom.cli`: what a person runs, in a process of its own."""
    return run([sys.executable, "-m", "headroom.cli", *args], cwd=cwd)


@functools.cache
def headroom_help(sub: str = "") -> str:
    res = headroom(*([sub] if sub else []), "--help")
    assert res.returncode == 0, f"headroom {sub} --help: exit {res.returncode}: {res.stderr}"
    return res.stdout


@functools.cache
def headroom_subcommands() -> frozenset[str]:
    m = re.search(r"\{([\w,-]+)\}", headroom_help())
    assert m, "headroom --help names no subcommands"
    return frozenset(m.group(1).split(","))


@functools.cache
def make_help() -> str:
    res = run(["make", "--no-print-directory", "help"])
    assert res.returncode == 0, res.stderr
    return res.stdout


@functools.cache
def make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))


@functools.cache
def make_variables() -> frozenset[str]:
    return frozenset(re.findall(r"^([A-Z_]+) \?=", (REPO / "Makefile").read_text(), flags=re.M))


def kubectl_available() -> bool:
    return shutil.which("kubectl") is not None


@functools.cache
def kubectl_help(words: tuple[str, ...]) -> str | None:
    res = run(["kubectl", *words, "--help"])
    return res.stdout if res.returncode == 0 else None


@functools.cache
def kubectl_options() -> str:
    """kubectl's global flags (`kubectl options`)."""
    return run(["kubectl", "options"]).stdout


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(^|[\s,\[]){re.escape(flag)}([=\s,\]]|$)", help_text, flags=re.M) is not None


def project_id(project: dict, workdir: Path) -> tuple[str | None, str]:
    """(`headroom change-id` of the Project, or None; what the CLI said)."""
    path = workdir / f".snippet-{project.get('metadata', {}).get('name', 'x')}.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    res = headroom("change-id", str(path), cwd=workdir)
    path.unlink()
    said = (res.stdout + res.stderr).strip()
    return (said if res.returncode == 0 and said.startswith("sha256:") else None), said


@functools.cache
def crd_schema() -> dict:
    crd = yaml.safe_load((REPO / "crds" / "projects.headroom.dev.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def unknown_fields(obj: object, schema: dict, path: str = "") -> list[str]:
    """Fields the CRD's schema does not have: kubectl 1.27+ refuses them, the API server drops them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(obj, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None:
                if key not in props:
                    out.append(f"{path}{key}")
                else:
                    out += unknown_fields(value, props[key], f"{path}{key}.")
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, f"{path}{key}.")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path[:-1]}[{i}].")
    return out


def contains(whole: object, part: object) -> bool:
    """Whether every key and list item of `part` is in `whole` (an excerpt of it)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and all(any(contains(w, p) for w in whole) for p in part)
    return str(whole) == str(part)


def shape_matches(whole: object, part: object) -> bool:
    """Whether every mapping key of `part` exists in `whole` (an edit of it, not an addition)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and (not isinstance(v, dict) or shape_matches(whole[k], v)) for k, v in part.items()
        )
    return True


def merge(base: object, edit: object, *, add: bool, problems: list[str], path: str = "") -> object:
    """`edit` applied to `base`: mappings merge, lists of named items merge by name, the rest replaces.

    add=False: a named item with structure of its own (a container, not an env variable) that `base`
    lacks is a problem: the edit names something that is not there."""
    if isinstance(base, dict) and isinstance(edit, dict):
        out = copy.deepcopy(base)
        for k, v in edit.items():
            out[k] = merge(base[k], v, add=add, problems=problems, path=f"{path}{k}.") if k in base else v
        return out
    named = (
        isinstance(base, list)
        and isinstance(edit, list)
        and all(isinstance(x, dict) and "name" in x for x in [*base, *edit])
    )
    if named:
        out = copy.deepcopy(base)
        for item in edit:
            at = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if at is not None:
                out[at] = merge(out[at], item, add=add, problems=problems, path=f"{path[:-1]}[{item['name']}].")
            elif add or not any(isinstance(v, dict | list) for v in item.values()):
                out.append(item)
            else:
                problems.append(f"names {path[:-1]}[{item['name']}], which is not there")
        return out
    return copy.deepcopy(edit)


def matches_with_elisions(shown: str, actual: str) -> bool:
    """Whether `actual` is what the docs show, where `...` (or …) in the docs stands for any text.

    Whitespace is compared as single spaces: the docs wrap long lines."""
    norm = lambda s: " ".join(s.split())  # noqa: E731
    parts = re.split(r"\.\.\.|…", norm(shown))
    pattern = r".*?".join(re.escape(p) for p in parts)
    return re.fullmatch(pattern, norm(actual), flags=re.S) is not None
