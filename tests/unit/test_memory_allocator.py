"""shell/memory.py against the real C library: the arena limit is taken, and a trim hands freed
memory back to the system (the operator's resident size follows what it holds after a burst)."""

from __future__ import annotations

import platform
import threading

import pytest
from headroom.shell import memory


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)


@glibc
def test_the_arena_limit_is_taken() -> None:
    assert memory.limit_arenas()


@glibc
def test_a_trim_hands_back_what_a_burst_in_a_thread_left_free() -> None:
    kept: list[bytes] = []

    def burst() -> None:
        # Many medium blocks (malloc, not Python's small-object allocator), every other one kept:
        # the freed half is fragmented between kept blocks, so it stays resident until trimmed.
        blocks = [bytes(64 * 1024) for _ in range(3000)]
        kept.extend(blocks[::50])
        del blocks

    worker = threading.Thread(target=burst)
    worker.start()
    worker.join()
    before = _rss_kib()
    assert memory.trim()
    assert _rss_kib() < before - 10 * 1024  # the free pages between the kept blocks went back
