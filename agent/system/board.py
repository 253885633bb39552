"""Board health: memory of this process, CPU temperature and the Pi's throttling flags; which CPU it is.

Fields a board does not report are left out, never faked.
"""

from __future__ import annotations

import platform
import resource
import shutil
import subprocess
from pathlib import Path

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def rss_mb() -> float:
    """Resident set size now, in MB, from /proc (peak from getrusage where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_temperature_c(zone: Path = THERMAL_ZONE) -> float | None:
    try:
        return int(zone.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def throttled_flags() -> int | None:
    """`vcgencmd get_throttled` as an int (bit 0 under-voltage, 2 throttled, 16+ 'has occurred'), or None."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        output = subprocess.run(
            ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2, check=True
        ).stdout
        return int(output.strip().split("=")[1], 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def board_health() -> dict[str, float | int]:
    health: dict[str, float | int] = {"rss_mb": round(rss_mb(), 1)}
    temperature = cpu_temperature_c()
    if temperature is not None:
        health["cpu_temp_c"] = round(temperature, 1)
    throttled = throttled_flags()
    if throttled is not None:
        health["throttled"] = throttled
    return health


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
