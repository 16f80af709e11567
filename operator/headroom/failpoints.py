"""Failpoints: deterministic crash sites for fault-injection tests.

`HEADROOM_FAILPOINTS=name[,name...]` makes the process die with SIGKILL's exit code the first time
it reaches a named point, exactly as a killed pod would: no cleanup, no flushing. Unset (always, in
production) a failpoint is one set lookup.
"""

from __future__ import annotations

import os
import sys

_ARMED = frozenset(filter(None, os.environ.get("HEADROOM_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in _ARMED:
        print(f"headroom: failpoint {name} reached; exiting as if killed", file=sys.stderr, flush=True)
        os._exit(137)
