"""The C allocator's share of the operator's memory: fewer arenas, and free pages handed back.

Headroom's writes and reads run in a few worker threads (the Kubernetes client is synchronous), and
glibc gives each thread an arena of its own (up to 8 per CPU): the responses parsed in one thread
leave free but fragmented memory in its arena that no other thread reuses, and none of it goes back
to the system on its own. After a start-up or a bulk onboarding, that kept the resident size of a
3 000-Project operator at two to three times what it holds live. Two arenas serve a handful of
threads well, and trimming hands back what a burst left free. Both are no-ops where the C library is
not glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache
from typing import Any

log = logging.getLogger("headroom")

M_ARENA_MAX = -8  # mallopt(3) parameter number
ARENAS = 2
TRIM_SECONDS = 30.0  # how often the operator hands free memory back (a trim takes milliseconds)


@cache
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas; call before threads start. True if the C library took it."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Hand the pages that are free in every arena back to the system (malloc_trim(3))."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
