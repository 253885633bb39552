"""What the fault tests do to processes from outside: kill a broker, cap a file size, read /proc figures.

Linux only, like the agent's target; nothing here needs root.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from benchmarks.machine import process_cpu_seconds
from tests.broker import Broker


def kill_broker(broker: Broker) -> None:
    """kill -9 the broker: no clean shutdown, connections cut mid-flight (Broker.stop() is a SIGTERM).

    broker.start() brings it back on the same port.
    """
    assert broker.process is not None, "the broker is not running"
    broker.process.kill()
    broker.process.wait(5)
    broker.process = None


def limit_file_size(pid: int, max_bytes: int | None) -> None:
    """Make writes of process `pid` past `max_bytes` in any file fail with EFBIG, like a full disk (None: no limit).

    prlimit(2) on a process of our own user needs no privilege as long as the hard limit stays.
    Python ignores SIGXFSZ, so the agent gets the error instead of being killed by the signal.
    """
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    soft = resource.RLIM_INFINITY if max_bytes is None else max_bytes
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def largest_file(folder: Path) -> int:
    """Size in bytes of the largest file directly in `folder`."""
    return max((p.stat().st_size for p in folder.iterdir() if p.is_file()), default=0)


@dataclass(frozen=True)
class ProcessFigures:
    """One look at a running process: resident memory, open file descriptors, threads, CPU seconds used."""

    rss_kb: int
    fds: int
    threads: int
    cpu_s: float

    @classmethod
    def of(cls, pid: int) -> ProcessFigures:
        """Read from /proc; raises OSError once the process is gone."""
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        fds, threads = len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))
        return cls(rss, fds, threads, process_cpu_seconds(pid))
