"""What every benchmark report states about the machine it ran on (the CPU: agent.system.board.cpu_model)."""

from __future__ import annotations

import os
from pathlib import Path


def logical_cpus() -> str:
    """Logical CPUs of the machine and how many this process may run on (a container or taskset may allow fewer)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.cpu_count()} logical, {usable} usable by this process"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far, from /proc; OSError once it is gone."""
    # The command name in field 2 may hold spaces; utime and stime are the 12th and 13th fields after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
