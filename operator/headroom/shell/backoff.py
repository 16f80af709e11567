"""Retry delays: exponential backoff with full jitter, the one way Headroom waits before trying again.

Jitter keeps replicas, restarts and the Projects of one reconcile burst from retrying in step.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

__all__ = ["backoff_delays", "jittered"]


def backoff_delays(base: float = 0.5, cap: float = 60.0, attempts: int | None = None) -> Iterator[float]:
    """Delays of 0..base, 0..2*base, 0..4*base ..., each at most `cap`; endless unless `attempts` is given."""
    delays = (random.uniform(0, min(cap, base * 2**attempt)) for attempt in itertools.count())
    return itertools.islice(delays, attempts) if attempts is not None else delays


def jittered(seconds: float, spread: float = 0.1) -> float:
    """A period of about `seconds` (plus or minus `spread`), so that periodic work does not align."""
    return seconds * random.uniform(1 - spread, 1 + spread)
