"""Fixtures of the integration tests that need more than the control plane: a real Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.harness.prometheus import PodSegment, Prometheus


@pytest.fixture
def prometheus_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Prometheus]]:
    """Start a Prometheus holding the given history: prometheus_factory([pod(...), ...]).

    With start=False it is only prepared (its port is reserved in its URL), so a test can begin
    with Prometheus down; `.stop()` and `.start()` simulate an outage and keep port and data.
    Every Prometheus is stopped when the test ends; on failure its log is printed.
    """
    made: list[Prometheus] = []

    def make(history: Sequence[PodSegment] = (), *, start: bool = True) -> Prometheus:
        prometheus = Prometheus(tmp_path / f"prometheus-{len(made)}")
        made.append(prometheus)
        if history:
            prometheus.backfill(history)
        return prometheus.start() if start else prometheus

    yield make
    report = getattr(request.node, "rep_call", None)
    for prometheus in made:
        prometheus.stop()
        if report is not None and report.failed:
            print(f"----- Prometheus {prometheus.url} log:\n{prometheus.logs(30)}")
