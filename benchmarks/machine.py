"""What every benchmark report states about the machine it ran on (the CPU: agent.board.cpu_model)."""

from __future__ import annotations

import os


def logical_cpus() -> str:
    """Logical CPUs of the machine and how many this process may run on (a container or taskset may allow fewer)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.cpu_count()} logical, {usable} usable by this process"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
