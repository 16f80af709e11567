"""Memory and CPU time of a process, read from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    rss_mib: float  # VmRSS: resident now
    hwm_mib: float  # VmHWM: the most it has been resident
    cpu_seconds: float  # utime + stime, every thread

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def sample(pid: int) -> Sample | None:
    """None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = handle.read()
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields: dict[str, float] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = float(value.split()[0]) / 1024  # kB -> MiB
    # The command name in parentheses may hold spaces: the fields start after the last ')'.
    rest = stat.rpartition(")")[2].split()
    utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)
    return Sample(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0), (utime + stime) / _TICKS)


def cpu_between(start: Sample | None, end: Sample | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end.cpu_seconds - start.cpu_seconds, 2)
