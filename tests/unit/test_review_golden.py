"""`headroom review` as a CI job runs it, compared with golden outputs (tests/golden/review/<case>/).

Each case holds a base and a head folder (the two sides of a pull request) and the expected outputs.
The CLI runs as a subprocess, offline, in a copy of the case. A history file is written with times
relative to now (`-3d`), so that its samples stay inside the lookback window on any day.
Regenerate after an intended change of the output with `HEADROOM_UPDATE_GOLDEN=1`, and read the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "review"
UPDATE = os.environ.get("HEADROOM_UPDATE_GOLDEN") == "1"


def headroom(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADROOM_", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", "headroom.cli", *args],
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": "/nonexistent/kubeconfig", "PYTHONPATH": str(REPO / "operator")},
        cwd=cwd,
        timeout=60,
    )


def case_dir(case: str, tmp_path: Path) -> Path:
    work = tmp_path / case
    shutil.copytree(GOLDEN / case, work, ignore=shutil.ignore_patterns("expected.*"))
    template = work / "history.csv.in"
    if template.exists():
        now = datetime.now(UTC).replace(microsecond=0)
        lines = template.read_text().splitlines()
        rows = [lines[0]]
        for line in lines[1:]:
            when, rest = line.split(",", 1)
            rows.append(f"{(now - timedelta(days=int(when.strip('-d')))).isoformat()},{rest}")
        (work / "history.csv").write_text("\n".join(rows) + "\n")
    return work


def compare(case: str, name: str, actual: str) -> None:
    expected = GOLDEN / case / name
    if UPDATE:
        expected.write_text(actual)
    assert expected.exists(), f"no golden file {expected}: run with HEADROOM_UPDATE_GOLDEN=1 and review it"
    assert actual == expected.read_text(), f"{case}/{name} differs from the golden output"


CASES = [
    # (case, extra arguments, exit code): what a reviewer sees for each kind of pull request
    ("raise", ("--history-file", "history.csv"), 0),
    ("folder", (), 0),
    ("invalid", (), 5),
    ("approved", (), 0),
    ("stale", (), 1),
]


@pytest.mark.parametrize(("case", "extra", "code"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("output", ["markdown", "json"])
def test_review_matches_its_golden_output(
    case: str, extra: tuple[str, ...], code: int, output: str, tmp_path: Path
) -> None:
    work = case_dir(case, tmp_path)
    result = headroom(work, "review", "base", "head", *extra, "-o", output)
    assert result.returncode == code, result.stderr
    assert result.stderr == ""
    compare(case, f"expected.{'md' if output == 'markdown' else 'json'}", result.stdout)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_review_over_a_git_range_compares_with_where_the_branch_began(tmp_path: Path) -> None:
    """`--git-range main..HEAD` shows the pull request's own change: a commit that landed on main after
    the branch began (here: search's lookback) is not part of it, and unchanged files are not read."""
    case = GOLDEN / "folder"
    repo = tmp_path / "projects"
    shutil.copytree(case / "base", repo / "projects")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "projects")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "change")
    shutil.rmtree(repo / "projects")
    shutil.copytree(case / "head", repo / "projects")
    git(repo, "add", "-A", "projects")
    git(repo, "commit", "-q", "-m", "head")
    git(repo, "checkout", "-q", "main")
    search = repo / "projects" / "search.yaml"
    search.write_text(search.read_text().replace("lookback: 2w", "lookback: 4w"))
    git(repo, "commit", "-q", "-am", "landed meanwhile")
    git(repo, "checkout", "-q", "change")
    result = headroom(repo, "review", "--git-range", "main..change")
    assert result.returncode == 0, result.stderr
    compare("folder", "expected-git.md", result.stdout)
