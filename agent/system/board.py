"""Board health: memory of this process, CPU temperature and the Pi's throttling flags; which CPU it is.

Fields a board does not report are left out, never faked.
"""

from __future__ import annotations

import logging
import platform
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("yolo_edge.board")

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


class BoardHealth:
    """rss_mb, cpu_temp_c and throttled for stats, without ever waiting on a child process.

    /proc and sysfs are read inline (a read of a few bytes), but `vcgencmd` is a fork and an exec,
    tens of milliseconds on a busy Pi: it runs on a short-lived thread of its own, at most one at a
    time and at most every `refresh_s`, and stats carry the last answer it gave.
    """

    def __init__(self, refresh_s: float = 10.0, read_throttled: Callable[[], int | None] = throttled_flags) -> None:
        self.refresh_s = refresh_s
        self._read_throttled = read_throttled
        self._lock = threading.Lock()
        self._throttled: int | None = None
        self._asked_mono: float | None = None
        self._running = False

    def snapshot(self) -> dict[str, float | int]:
        """The figures known now; starts a refresh of the throttling flags when they are due."""
        health: dict[str, float | int] = {"rss_mb": round(rss_mb(), 1)}
        temperature = cpu_temperature_c()
        if temperature is not None:
            health["cpu_temp_c"] = round(temperature, 1)
        now = time.monotonic()
        with self._lock:
            throttled = self._throttled
            due = not self._running and (self._asked_mono is None or now - self._asked_mono >= self.refresh_s)
            if due:
                self._running, self._asked_mono = True, now
        if due:
            threading.Thread(target=self._refresh, name="board-health", daemon=True).start()
        if throttled is not None:
            health["throttled"] = throttled
        return health

    def _refresh(self) -> None:
        try:
            value = self._read_throttled()
        except Exception:  # a bug here must not end in silence, nor take stats down
            log.exception("reading the throttling flags failed")
            value = None
        with self._lock:
            self._throttled = value if value is not None else self._throttled
            self._running = False


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
