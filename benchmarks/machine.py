"""What every benchmark report states about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """x86 says 'model name'; a Raspberry Pi's cpuinfo has 'Model' (the board) and no model name."""
    try:
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())
            if v
        )
    except OSError:
        fields = {}
    return (
        fields.get("model name")
        or fields.get("Model")
        or fields.get("Hardware")
        or platform.processor()
        or platform.machine()
    )


def logical_cpus() -> str:
    """Logical CPUs of the machine and how many this process may run on (a container or taskset may allow fewer)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.cpu_count()} logical, {usable} usable by this process"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
