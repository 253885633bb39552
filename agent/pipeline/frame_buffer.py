"""The hand-over between a source's reader thread and the frame loop."""

from __future__ import annotations

import threading
import time
from collections import deque

from agent.pipeline.frames import Frame


class FrameBuffer:
    """Frames between reader and consumer: a slot where the newest wins, or a queue that blocks the reader."""

    def __init__(self, capacity: int, keep_newest: bool) -> None:
        self._items: deque[Frame] = deque()
        self._capacity = capacity
        self._keep_newest = keep_newest
        self._cond = threading.Condition()
        self._finished = False
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        """Add a frame; False (frame discarded) once `finish` was called."""
        with self._cond:
            if self._keep_newest:
                while len(self._items) >= self._capacity:
                    self._items.popleft()
                    self.dropped += 1
            while len(self._items) >= self._capacity and not self._finished:
                self._cond.wait(0.5)  # finish() notifies; the timeout is only a backstop
            if self._finished:
                return False
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Frame | None:
        """The oldest frame held, or None after `timeout` seconds or once finished and empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if self._finished or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def finish(self) -> None:
        """No more frames: wake everyone waiting (frames already held can still be taken)."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def empty(self) -> bool:
        with self._cond:
            return not self._items
