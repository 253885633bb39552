"""Turns on the CPU between an inference that holds every core and a frame reader decoding ahead.

With as many onnxruntime threads as cores, a frame decoded during an inference takes a core from
one of its threads, and each parallel section then waits for the thread that lost its core. Between
two inferences the frame loop works on one core (postprocess, publish, the next letterbox) and the
other is free, once onnxruntime's threads stop spinning at the end of a run: a reader that decodes
there costs the loop nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CpuTurns:
    """Which inferences that hold every core are running, and how many have ended."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._ended = 0

    @property
    def ended(self) -> int:
        return self._ended

    @contextmanager
    def inference(self) -> Iterator[None]:
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._ended += 1
                self._cond.notify_all()

    def wait_until_free(self, timeout: float) -> bool:
        """Block while such an inference runs, at most `timeout` seconds; False when it timed out."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout)

    def wait_for_end_after(self, ended: int, timeout: float) -> bool:
        """Block until an inference ends after `ended` had ended and none runs; False when timed out."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ended > ended and self._running == 0, timeout)


# One per process, as the cores are.
TURNS = CpuTurns()
