"""`make demo` works from a clean checkout: the newcomer's first experience."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(bool(os.environ.get("HEADROOM_TEST_KUBECONFIG")), reason="the demo starts its own control plane")
def test_the_demo_shows_derived_quotas_and_a_signed_off_raise() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hack.demo", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "kubectl get projects" in out
    assert "payments" in out and "search" in out
    assert "needs sign-off: no approval yet" in out
    # The approved raise, applied: payments' requests.cpu row shows 40 cores as its hard value.
    assert re.search(r"^\s+requests\.cpu\s+40000m\s", out, re.MULTILINE), out[-3000:]
    assert "by reviewer@example.com" in out
