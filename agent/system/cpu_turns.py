"""Turns on the CPU between an inference that holds every core and a frame reader decoding ahead.

With as many onnxruntime threads as cores, a frame decoded during an inference takes a core from
one of its threads, and each parallel section then waits for the thread that lost its core. Between
two inferences the frame loop works on one core (postprocess, publish, the next letterbox) and the
other is free, once onnxruntime's threads stop spinning at the end of a run: a reader that decodes
there costs the loop nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A reader waits at most this long for its turn (a stuck loop must not stop it), checking this often
# meanwhile whether the loop ran out of frames.
TURN_WAIT_S = 0.5
TURN_POLL_S = 0.01


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

    def wait_for_a_turn(self, ended_before: int, nothing_queued: Callable[[], bool], stop: threading.Event) -> None:
        """Before a reader decodes ahead of the loop: never during an inference that holds every core, and
        while the loop runs inferences and still has a frame to work on, at the end of its next one, when the
        cores are free while it postprocesses and letterboxes. ended_before: the inferences ended when the
        decode before the last one began; a loop that ran none since (a still scene, motion gating) or has no
        frame left (nothing_queued) is not kept waiting for one."""
        ended = self._ended
        if ended == ended_before or nothing_queued():
            self.wait_until_free(TURN_WAIT_S)
            return
        deadline = time.monotonic() + TURN_WAIT_S
        while not stop.is_set() and not nothing_queued():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.wait_for_end_after(ended, min(remaining, TURN_POLL_S)):
                return


# One per process, as the cores are.
TURNS = CpuTurns()
