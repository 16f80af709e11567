"""Failpoints: deterministic crash and stall sites for fault-injection tests.

`HEADROOM_FAILPOINTS=name[,name...]` makes the process die with SIGKILL's exit code the first time
it reaches a named point, exactly as a killed pod would: no cleanup, no flushing.
`name=pause:SECONDS` instead holds the caller there once, for that long, so that a test can break
something (stop the API server, change an object) at a known moment. Unset (always, in production)
a failpoint is one dict lookup.

Points: `approved-change-before-write`, `approved-change-after-quota-write`,
`approved-change-after-status-write` (reconciler.py), `lease-renew-before-write` (leader.py).
"""

from __future__ import annotations

import asyncio
import os
import sys


def _parse(text: str) -> dict[str, str]:
    armed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        armed[name.strip()] = action.strip() or "kill"
    return armed


_ARMED = _parse(os.environ.get("HEADROOM_FAILPOINTS", ""))
_FIRED: set[str] = set()


def _pause_seconds(name: str) -> float | None:
    """The pause of an armed pause point the first time it is reached; None otherwise."""
    action = _ARMED[name]
    if not action.startswith("pause:") or name in _FIRED:
        return None
    _FIRED.add(name)
    seconds = float(action.partition(":")[2] or 0)
    print(f"headroom: failpoint {name} reached; pausing {seconds:g}s", file=sys.stderr, flush=True)
    return seconds


def _die(name: str) -> None:
    print(f"headroom: failpoint {name} reached; exiting as if killed", file=sys.stderr, flush=True)
    os._exit(137)


async def async_failpoint(name: str) -> None:
    """For the event loop: kill, or pause only the calling task (watches keep running)."""
    if name not in _ARMED:
        return
    if _ARMED[name] == "kill":
        _die(name)
    seconds = _pause_seconds(name)
    if seconds:
        await asyncio.sleep(seconds)
