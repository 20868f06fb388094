"""CPU time of process trees, read from /proc (Linux; elsewhere the numbers are absent).

Used to show where a run's CPU went: the load generator, the server under test,
PostgreSQL and Redis all share this machine's cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Proc:
    ppid: int
    name: str
    cpu_s: float  # user + system
    reaped_s: float  # user + system of its children that exited and were waited for


def snapshot() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # the process ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid is field 4, utime/stime/cutime/cstime 14-17.
        found[int(entry.name)] = Proc(
            int(fields[1]),
            name,
            (int(fields[11]) + int(fields[12])) / _TICKS,
            (int(fields[13]) + int(fields[14])) / _TICKS,
        )
    return found


def tree_cpu(procs: Mapping[int, Proc], root: int) -> float:
    """CPU of ``root`` and its descendants, including those that already exited (a pooled
    database connection that is closed ends its PostgreSQL backend)."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            total += procs[pid].cpu_s + procs[pid].reaped_s
            todo += children.get(pid, [])
    return total


def parent_of(pid: int) -> int | None:
    proc = snapshot().get(pid)
    return proc.ppid if proc else None


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / _TICKS


MACHINE = "machine"


@dataclass(frozen=True)
class CpuGroups:
    """Named process trees; ``sample()`` gives each tree's cumulative CPU seconds, plus the
    whole machine's busy seconds under ``MACHINE`` (what other processes used shows)."""

    roots: Mapping[str, int]

    def sample(self) -> dict[str, float]:
        procs = snapshot()
        found = {name: tree_cpu(procs, pid) for name, pid in self.roots.items() if pid in procs}
        busy = machine_busy_s()
        if busy is not None:
            found[MACHINE] = busy
        return found
