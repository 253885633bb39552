"""Which live read is stuck, and whether its reader may be given up for a new one.

A camera driver or a stream can block in `grab()` for good. The reader thread cannot be interrupted
there, so the source abandons it (a newer generation of reader takes over) and lets it go whenever the
read returns: it then releases its capture and exits. But a wedged device hangs the new reader too,
and abandoning every stuck reader piled up one thread and one open capture per stall timeout (5,760 a
day at 15 s). So at most MAX_ABANDONED readers may be stuck at once: past that the source stays
stalled, with its current reader still waiting, until one of the stuck reads returns.

The reader thread calls begin() and end() around each read; the consumer calls check().
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# One spare: a stream whose connection hung gets a fresh one, while a device that hangs every reader
# holds two threads and two captures (each capture keeps its driver's buffers) instead of hundreds.
MAX_ABANDONED = 1


@dataclass(frozen=True)
class Stall:
    """A read stuck for stuck_s seconds. first: the first check to see it stuck (count it, log it).

    replaced: its reader was abandoned, and the caller starts one of the new generation; else
    `stuck_readers` abandoned readers are still in their reads and no new one is started.
    """

    stuck_s: float
    first: bool
    replaced: bool
    stuck_readers: int


class ReadWatch:
    """The current reader generation, the start of its read in progress, and the readers abandoned in theirs."""

    def __init__(self, timeout_s: float, max_abandoned: int = MAX_ABANDONED) -> None:
        self.timeout_s = timeout_s
        self.max_abandoned = max_abandoned
        self.generation = 0  # raised to abandon the current reader; its reads then count for nothing
        self.stalls = 0  # reads seen stuck, each counted once
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the current reader's read, None between reads
        self._reported = False  # that read was already seen stuck
        self._abandoned: tuple[threading.Thread, ...] = ()

    def begin(self) -> None:
        """The current reader starts a read."""
        with self._lock:
            self._since, self._reported = time.monotonic(), False

    def end(self, generation: int) -> tuple[bool, float | None]:
        """A read returned: (its reader is still current, when the read began if it was seen stuck).

        A reader no longer current must stop: a newer one owns the source.
        """
        with self._lock:
            if generation != self.generation:
                return False, None
            since, reported = self._since, self._reported
            self._since, self._reported = None, False
            return True, since if reported else None

    def check(self, reader: threading.Thread) -> Stall | None:
        """None unless the current read is stuck past the timeout; then abandon `reader` if allowed."""
        with self._lock:
            if self._since is None:
                return None
            stuck_s = time.monotonic() - self._since
            if stuck_s < self.timeout_s:
                return None
            first = not self._reported
            self._reported = True
            self.stalls += first
            self._abandoned = tuple(thread for thread in self._abandoned if thread.is_alive())
            if len(self._abandoned) >= self.max_abandoned:
                return Stall(stuck_s, first, False, len(self._abandoned))
            self.generation += 1
            self._since = None
            self._abandoned += (reader,)
            return Stall(stuck_s, first, True, len(self._abandoned))

    def abandoned(self) -> int:
        """Abandoned readers still in their read (each holds its thread and its capture)."""
        with self._lock:
            return sum(thread.is_alive() for thread in self._abandoned)
