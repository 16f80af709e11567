"""Every command and output shown in README.md and docs/*.md, checked, so the docs cannot drift.

No cluster: the headroom CLI runs as a person runs it (`python -m headroom.cli`, a subprocess), make
and kubectl only for `help`. What each kind of fenced block must be:

* ```yaml / ```json: parsed. A Project is checked as `kubectl apply` and Headroom would (fields the
  CRD lacks, `headroom change-id` must accept it). Another object needs apiVersion, kind and a name.
  Anything else says in its first line what it is:
    `# <path>`            a whole file of the reader's, e.g. `# projects/payments.yaml`; later blocks
                          and console commands of the same document see it under that path;
    `# excerpt of <path>` part of a file, in the repository or shown earlier: all of it must be there;
    `# edit of <path>`    a change to such a file: applied to it (named list items merge by name), and
                          the result checked again; an approval it sets must name the file's change id.
* ```console: `$ command` lines followed by their output, run in the document's files; `...` in the
  output stands for any text. Only offline commands: headroom change-id / verify / --help, make help.
* ```sh: not run (they need a cluster); each command's subcommands, flags, files and make targets
  must exist. Inline `headroom ...`, `kubectl ...`, `make ...` and `python -m ...` spans too.
* ```text: shown output, not a command.
Every `sha256:` id in a document is (a prefix of) the change id of a Project that document shows.
"""

from __future__ import annotations

import functools
import glob
import itertools
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs import checks
from tests.docs.markdown import DOCS, REPO, Block, anchors, blocks, inline_code, links, table_after

LANGS = {"yaml", "json", "console", "sh", "text"}
IDS = re.compile(r"sha256:[0-9a-f]{4,64}")
doc_params = pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))


class Reader:
    """One document read from the top: the files it has shown so far and the change ids they have."""

    def __init__(self, doc: Path, workdir: Path) -> None:
        self.doc, self.workdir = doc, workdir
        self.ids: set[str] = set()
        self.problems: list[str] = []
        self.counts = {"yaml": 0, "projects": 0, "console commands": 0}

    def problem(self, block: Block, message: str) -> None:
        self.problems.append(f"{block.where}: {message}")

    def file(self, rel: str) -> Path | None:
        for base in (self.workdir, REPO):
            if (base / rel).is_file():
                return base / rel
        return None

    def check_project(self, block: Block, project: dict) -> str | None:
        self.counts["projects"] += 1
        unknown = checks.unknown_fields(project, checks.crd_schema())
        if unknown:
            self.problem(block, f"fields the Project CRD does not have (kubectl refuses them): {unknown}")
        pid, said = checks.project_id(project, self.workdir)
        if pid is None:
            self.problem(block, f"`headroom change-id` refuses this Project: {said}")
        else:
            self.ids.add(pid)
        return pid

    def yaml_block(self, block: Block) -> None:
        self.counts["yaml"] += 1
        try:
            docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
        except yaml.YAMLError as exc:
            self.problem(block, f"not valid YAML: {exc}")
            return
        mark = re.match(r"(excerpt|edit) of ([\w./-]+)", block.header)
        if mark:
            self.excerpt_or_edit(block, docs, mark.group(1), mark.group(2))
            return
        path = block.header.split()[0] if re.match(r"[\w./-]+\.(ya?ml|json)\b", block.header) else None
        for d in docs:
            if not isinstance(d, dict):
                self.problem(block, "neither a manifest nor marked as a file, an excerpt or an edit")
            elif d.get("kind") == "Project":
                self.check_project(block, d)
            elif d.get("apiVersion") and d.get("kind"):
                self.check_manifest(block, d, path)
            elif path is None:
                self.problem(
                    block, "a fragment must say what it is part of (`# excerpt of <path>` or `# edit of <path>`)"
                )
        if path:
            target = self.workdir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)

    def check_manifest(self, block: Block, obj: dict, path: str | None) -> None:
        if obj["kind"] == "Kustomization":
            base = REPO / (Path(path).parent if path else Path("."))
            for res in obj.get("resources", []):
                if "://" not in res and not Path(os.path.normpath(base / res)).exists():
                    self.problem(block, f"kustomization resource {res!r} does not exist (from {base})")
        elif not obj.get("metadata", {}).get("name"):
            self.problem(block, f"{obj['kind']} without metadata.name")

    def excerpt_or_edit(self, block: Block, docs: list, how: str, rel: str) -> None:
        target = self.file(rel)
        if target is None:
            self.problem(block, f"{how} of {rel}, which neither the repository nor this document has")
            return
        wholes = [d for d in yaml.safe_load_all(target.read_text()) if d is not None]
        for part in docs:
            if how == "excerpt":
                if not any(checks.contains(w, part) for w in wholes):
                    self.problem(block, f"not in {rel} as shown: {part}")
                continue
            mine = target.is_relative_to(self.workdir)  # the reader's own file may get new fields
            candidates = [i for i, w in enumerate(wholes) if mine or checks.shape_matches(w, part)]
            if not candidates:
                self.problem(block, f"an edit of {rel} whose fields {rel} does not have")
                continue
            problems: list[str] = []
            edited = checks.merge(wholes[candidates[0]], part, add=mine, problems=problems)
            for p in problems:
                self.problem(block, f"an edit of {rel} that {p}")
            if isinstance(edited, dict) and edited.get("kind") == "Project":
                approved = edited.get("metadata", {}).get("annotations", {}).get("headroom.dev/approved-change")
                pid = self.check_project(block, edited)
                if (
                    approved
                    and part.get("metadata", {}).get("annotations", {}).get("headroom.dev/approved-change")
                    and pid
                    and approved != pid
                ):
                    self.problem(block, f"approves {approved}, but {rel} has change id {pid}")
            if mine:
                wholes[candidates[0]] = edited
                target.write_text(yaml.safe_dump_all(wholes, sort_keys=False))

    def console_block(self, block: Block) -> None:
        entries: list[tuple[str, list[str]]] = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                entries.append((line[2:], []))
            elif entries:
                entries[-1][1].append(line)
            elif line.strip():
                self.problem(block, f"output before any `$ command`: {line!r}")
        for command, shown in entries:
            self.counts["console commands"] += 1
            argv = shlex.split(command, comments=True)
            if argv[:1] == ["headroom"] and argv[1:2] and argv[1] in ("change-id", "verify", "--help"):
                args = [m for a in argv[1:] for m in (sorted(glob.glob(a, root_dir=self.workdir)) or [a])]
                res = checks.headroom(*args, cwd=self.workdir)
                actual = res.stdout + res.stderr
                if argv[1] == "change-id" and res.returncode == 0:
                    self.ids.add(res.stdout.strip())
            elif argv == ["make", "help"]:
                actual = checks.make_help()
            else:
                self.problem(block, f"`{command}` is not an offline command; show it in a ```sh block")
                continue
            if not checks.matches_with_elisions("\n".join(shown), actual):
                self.problem(block, f"`{command}` shows\n{chr(10).join(shown)}\nbut prints\n{actual}")


_read: dict[Path, Reader] = {}


@pytest.fixture
def reader(doc: Path, tmp_path_factory: pytest.TempPathFactory) -> Reader:
    """The document read once, from the top, in a directory of its own."""
    if doc not in _read:
        _read[doc] = read(doc, tmp_path_factory.mktemp(doc.stem))
    return _read[doc]


def read(doc: Path, workdir: Path) -> Reader:
    reader = Reader(doc, workdir)
    for block in blocks(doc):
        if block.lang not in LANGS:
            reader.problem(
                block, f"a fenced block must say what it is ({', '.join(sorted(LANGS))}), not {block.lang or 'nothing'}"
            )
        elif block.lang in ("yaml", "json"):
            reader.yaml_block(block)
        elif block.lang == "console":
            reader.console_block(block)
    return reader


@doc_params
def test_snippets_are_valid_and_console_output_is_what_the_commands_print(doc: Path, reader: Reader) -> None:
    assert not reader.problems, "\n\n".join(reader.problems)


@doc_params
def test_every_change_id_shown_is_that_of_a_project_the_document_shows(doc: Path, reader: Reader) -> None:
    text = doc.read_text()
    wrong = sorted({i for i in IDS.findall(text) if not any(known.startswith(i) for known in reader.ids)})
    assert not wrong, f"{doc.name} shows ids that belong to none of its Projects {sorted(reader.ids)}: {wrong}"


# --- commands that need a cluster: their subcommands, flags, files and targets must exist ----------

GLOBAL_HEADROOM = {"--kubeconfig", "--context", "-n", "--namespace", "--as", "--as-group"}
KUBECTL_VALUE_FLAGS = {
    "-n",
    "--namespace",
    "-k",
    "--kustomize",
    "-f",
    "--filename",
    "-o",
    "--output",
    "-l",
    "--selector",
    "--context",
    "--kubeconfig",
    "-c",
    "--container",
}


def words_of(command: str) -> list[list[str]]:
    """The simple commands of a shell line (joined by &&), without comments and usage brackets."""
    argv = shlex.split(command, comments=True)
    out, cur = [], []
    for tok in argv:
        if tok in ("&&", ";", "||"):
            out.append(cur)
            cur = []
        else:
            tok = tok.strip("[]")
            if tok and tok not in ("|", "..."):
                cur.append(tok)
    return [c for c in [*out, cur] if c]


def flags_of(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("-") and a != "-"]


def check_headroom(argv: list[str], ids: set[str] | None) -> list[str]:
    out, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in GLOBAL_HEADROOM:
            i += 2
            continue
        rest.append(a)
        i += 1
    positional = [a for a in rest if not a.startswith("-")]
    if not positional:
        return (
            []
            if all(checks.has_flag(checks.headroom_help(), f) for f in flags_of(rest))
            else [f"headroom {' '.join(argv)}: a flag `headroom --help` does not list"]
        )
    sub = positional[0]
    if sub not in checks.headroom_subcommands():
        return [f"`headroom {sub}` is not a subcommand ({', '.join(sorted(checks.headroom_subcommands()))})"]
    text = checks.headroom_help(sub)
    out += [f"`headroom {sub}` has no flag {f}" for f in flags_of(rest) if not checks.has_flag(text, f)]
    if ids is not None and "--id" in rest:
        given = rest[rest.index("--id") + 1] if rest.index("--id") + 1 < len(rest) else ""
        hexid = given.removeprefix("sha256:")
        if not any(k.removeprefix("sha256:").startswith(hexid) for k in ids):
            out.append(f"`--id {given}` is the id of none of this document's Projects {sorted(ids)}")
    return out


def check_kubectl(argv: list[str], ids: set[str] | None) -> list[str]:
    if argv[:1] == ["headroom"]:
        return check_headroom(argv[1:], ids)
    if not checks.kubectl_available():
        pytest.skip("kubectl is not installed: its commands in the docs are not checked here")
    words, paths, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in KUBECTL_VALUE_FLAGS:
            if a in ("-k", "--kustomize", "-f", "--filename") and i + 1 < len(argv):
                paths.append(argv[i + 1])
            i += 2
            continue
        if not a.startswith("-"):
            words.append(a)
        i += 1
    text = checks.kubectl_help(tuple(words))
    if text is None:
        return [f"`kubectl {' '.join(words)} --help` fails: not a kubectl command"]
    text += checks.kubectl_options()
    out = [f"`kubectl {' '.join(words)}` has no flag {f}" for f in flags_of(argv) if not checks.has_flag(text, f)]
    out += [f"kubectl: {p} does not exist" for p in paths if "$" not in p and not (REPO / p).exists()]
    return out


def check_command(argv: list[str], ids: set[str] | None, cwd: Path = REPO) -> list[str]:
    prog, args = argv[0], argv[1:]
    if prog == "headroom":
        return check_headroom(args, ids)
    if prog == "kubectl":
        return check_kubectl(args, ids)
    if prog == "make":
        out = [
            f"`make {a}`: no such target in the Makefile"
            for a in args
            if "=" not in a and a not in checks.make_targets()
        ]
        return out + [
            f"`make {a}`: the Makefile has no variable {a.split('=')[0]}"
            for a in args
            if "=" in a and a.split("=")[0] not in checks.make_variables()
        ]
    if prog == "python" and args[:1] == ["-m"]:
        res = checks.run([sys.executable, "-m", args[1], "--help"])
        if res.returncode != 0:
            return [f"`python -m {args[1]} --help` fails: {res.stderr.strip()[-300:]}"]
        return [
            f"`python -m {args[1]}` has no flag {f}" for f in flags_of(args[2:]) if not checks.has_flag(res.stdout, f)
        ]
    if prog == "docker":
        return [
            f"docker: {p} does not exist"
            for flag, p in itertools.pairwise(args)
            if flag == "-f" and not (REPO / p).exists()
        ]
    if prog == "cd":
        return [] if (REPO / args[0]).is_dir() else [f"cd {args[0]}: no such directory"]
    if prog == "kustomize" and args[:3] == ["edit", "set", "image"]:
        images = [i["name"] for i in yaml.safe_load((cwd / "kustomization.yaml").read_text()).get("images", [])]
        return [
            f"kustomize: {cwd.name}/kustomization.yaml has no image {a.split('=')[0]}"
            for a in args[3:]
            if a.split("=")[0] not in images
        ]
    if prog == "export":
        name, _, value = args[0].partition("=")
        out = [] if name == "KUBECONFIG" or name in env_names() else [f"export {name}: nothing reads it"]
        if value.startswith("$PWD/"):
            made = (REPO / "Makefile").read_text().replace("$(CLUSTER_DIR)", ".cluster")
            if value.removeprefix("$PWD/") not in made:
                out.append(f"export {name}={value}: nothing in the Makefile makes that file")
        return out
    return [f"the docs tests do not know how to check `{' '.join(argv)}`; add a check"]


def check_line(command: str, ids: set[str] | None) -> list[str]:
    try:
        simple = words_of(command)
    except ValueError as exc:
        return [f"`{command}`: {exc}"]
    out, cwd = [], REPO
    for argv in simple:
        out += check_command(argv, ids, cwd)
        if argv[0] == "cd" and len(argv) > 1:
            cwd = REPO / argv[1]
    return out


def sh_lines(block: Block) -> list[str]:
    return [
        line
        for line in block.text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@doc_params
def test_commands_that_need_a_cluster_use_what_exists(doc: Path, reader: Reader) -> None:
    ids = reader.ids
    problems = []
    for block in blocks(doc):
        if block.lang == "sh":
            problems += [f"{block.where}: {p}" for line in sh_lines(block) for p in check_line(line, ids)]
    for line, span in inline_code(doc):
        if re.match(r"(headroom|kubectl|make|python -m) \S", span):
            problems += [f"{doc.relative_to(REPO)}:{line}: {p}" for p in check_line(span, ids)]
    assert not problems, "\n".join(problems)


@functools.cache
def env_names() -> frozenset[str]:
    """HEADROOM_* variables something reads: `headroom run`, the Makefile, the test suite's fixtures."""
    sources = [checks.headroom_help("run"), (REPO / "Makefile").read_text(), (REPO / "tests/conftest.py").read_text()]
    return frozenset(n for text in sources for n in re.findall(r"HEADROOM_[A-Z_]+", text))


@doc_params
def test_environment_variables_named_are_read_by_something(doc: Path) -> None:
    defined = {m for b in blocks(doc) if b.lang == "yaml" for m in re.findall(r"(HEADROOM_[A-Z_]+):", b.text)}
    named = set(re.findall(r"HEADROOM_[A-Z_]+", doc.read_text()))
    assert not named - env_names() - defined, f"read by nothing: {sorted(named - env_names() - defined)}"


def test_the_configuration_table_is_what_headroom_run_accepts() -> None:
    rows = table_after(REPO / "README.md", "Configuration")
    flags = {f for row in rows for f in re.findall(r"`(--[\w-]+)", row[0])}
    envs = {e for row in rows for e in re.findall(r"HEADROOM_[A-Z_]+", row[1])}
    text = checks.headroom_help("run")
    assert len(rows) >= 10, rows
    assert {f for f in flags if not checks.has_flag(text, f)} == set(), "flags `headroom run` does not have"
    assert {e for e in envs if e not in text} == set(), "variables `headroom run` does not read"
    accepted = set(re.findall(r"^\s+(--[\w-]+)", text, flags=re.M)) - {"--help"}
    read_env = set(re.findall(r"HEADROOM_[A-Z_]+", text))
    assert accepted - flags == set(), "flags of `headroom run` missing from the README's table"
    assert read_env - envs == set(), "variables of `headroom run` missing from the README's table"


@doc_params
def test_links_between_docs_resolve(doc: Path) -> None:
    broken = []
    for line, target in links(doc):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{line}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{line}: {target}: {dest.name} has no heading #{anchor}")
    assert not broken, "\n".join(broken)


@doc_params
def test_repository_paths_named_exist(doc: Path) -> None:
    """Paths a reader is sent to (manifests, crds, bench, hack, docs, tests): Headroom's modules aside."""
    missing = [
        f"{line}: {span}"
        for line, span in inline_code(doc)
        if re.fullmatch(r"(manifests|crds|bench|hack|docs|tests|\.ci)/[\w./-]*", span) and not (REPO / span).exists()
    ]
    assert not missing, missing


def readme_project() -> dict:
    block = next(b for b in blocks(REPO / "README.md") if b.lang == "yaml" and "kind: Project" in b.text)
    return yaml.safe_load(block.text)


def _id(project: dict, tmp_path: Path) -> str:
    pid, said = checks.project_id(project, tmp_path)
    assert pid, said
    return pid


SAME_ID = {  # README: "Owner and alerts are not part of it"; "1" and "1000m" give the same id
    "owner contacts": lambda p: p["spec"]["owner"].update(contacts=["#elsewhere"]),
    "alert thresholds": lambda p: p["spec"]["alerts"].update(thresholds=[50, 100]),
    "requested as millicores": lambda p: p["spec"]["namespaces"][0].update(requested={"requests.cpu": "40000m"}),
}
NEW_ID = {  # README: namespaces and requested, spec.quota, spec.defaults and spec.reason
    "a higher request": lambda p: p["spec"]["namespaces"][0].update(requested={"requests.cpu": "41"}),
    "a namespace added": lambda p: p["spec"]["namespaces"].append({"name": "payments-eu"}),
    "headroomPercent": lambda p: p["spec"]["quota"].update(headroomPercent=25),
    "lookback": lambda p: p["spec"]["quota"].update(lookback="60d"),
    "minimum": lambda p: p["spec"]["quota"]["minimum"].update(pods="20"),
    "enforcement": lambda p: p["spec"]["quota"].update(enforcement="Observe"),
    "resources": lambda p: p["spec"]["quota"].update(resources=["requests.cpu"]),
    "container defaults": lambda p: p["spec"]["defaults"]["limits"].update(memory="1Gi"),
    "reason": lambda p: p["spec"].update(reason="PAY-1240: a new ticket"),
}


@pytest.mark.parametrize("edit", SAME_ID, ids=str)
def test_what_the_readme_leaves_out_of_the_change_id_keeps_it(edit: str, tmp_path: Path) -> None:
    project = readme_project()
    before = _id(project, tmp_path)
    SAME_ID[edit](project)
    assert _id(project, tmp_path) == before


@pytest.mark.parametrize("edit", NEW_ID, ids=str)
def test_what_the_readme_says_the_change_id_covers_changes_it(edit: str, tmp_path: Path) -> None:
    project = readme_project()
    before = _id(project, tmp_path)
    NEW_ID[edit](project)
    assert _id(project, tmp_path) != before
