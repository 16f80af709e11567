"""The layout keeps the functional core pure: nothing under headroom/core does I/O or reads a clock.

A decision that needs the time gets it as an argument; one that needs the cluster gets what the shell
observed. This test is what keeps it so when the next capability lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "headroom"
CORE = sorted((PACKAGE / "core").rglob("*.py"))
# Libraries that do I/O, read a clock or randomness, or reach the process environment.
FORBIDDEN = (
    "headroom.shell",
    "headroom.cli",
    "kopf",
    "kubernetes",
    "aiohttp",
    "prometheus_client",
    "asyncio",
    "time",
    "random",
    "os",
    "socket",
    "subprocess",
    "threading",
    "urllib",
    "http",
    "logging",
    "pathlib",
    "shutil",
    "sys",
    "yaml",
)
CLOCK_READS = ("datetime.now", "date.today", "datetime.utcnow", "datetime.today")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_there_is_a_core() -> None:
    assert {p.name for p in CORE} >= {
        "quantity.py",
        "spec.py",
        "derivation.py",
        "changes.py",
        "planning.py",
        "alert_policy.py",
        "business_hours.py",
        "names.py",
    }


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_nothing_that_does_io(path: Path) -> None:
    bad = [name for name in _imports(path) if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{path.name} imports {bad}: the core must stay pure (move the I/O to headroom/shell)"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_reads_no_clock(path: Path) -> None:
    source = path.read_text()
    assert not [c for c in CLOCK_READS if c + "(" in source], f"{path.name} reads the clock: take `now` as an argument"


def test_the_shell_may_use_the_core_but_never_the_other_way() -> None:
    shell_modules = {
        p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".") for p in (PACKAGE / "shell").rglob("*.py")
    }
    assert shell_modules, "no shell?"
    for path in CORE:
        for name in _imports(path):
            assert not name.startswith("headroom.shell"), f"{path.name} imports {name}"


def test_every_wire_name_is_spelled_once() -> None:
    """Labels, annotations and the API group appear as literals only in core/names.py."""
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("headroom.dev"):
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not spelled, "wire names outside core/names.py:\n" + "\n".join(spelled)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_functions_fit_in_a_head(path: Path) -> None:
    """Decisions in steps a reader can hold: no core function over 60 lines or with more than 8 parameters."""
    too_big = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            params = len(node.args.args) + len(node.args.kwonlyargs) + len(node.args.posonlyargs)
            if lines > 60 or params > 8:
                too_big.append(f"{node.name}: {lines} lines, {params} parameters")
    assert not too_big, f"{path.name}: " + "; ".join(too_big)


# The terminal commands may use the kubernetes client library; the operator (`headroom run`) never
# does: it would cost it about 34 MiB (headroom.shell.apiclient says why, tests/unit/test_operator_imports.py
# checks the running process).
TERMINAL_COMMANDS = {"shell/cli.py", "shell/capacity_cli.py"}


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if str(p.relative_to(PACKAGE)) not in TERMINAL_COMMANDS],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_terminal_commands_use_a_kubernetes_client_library(path: Path) -> None:
    libraries = ("kubernetes", "kubernetes_asyncio", "pykube", "urllib3")
    used = [name for name in _imports(path) if name.split(".")[0] in libraries]
    assert not used, f"{path.relative_to(PACKAGE)} imports {used}"
