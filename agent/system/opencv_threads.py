"""OpenCV's own thread pool, turned off: the agent's cv2 calls run on the thread that makes them.

cv2 spreads a resize, blur or dilation over a pool of worker threads, and each worker then spins
(sched_yield) for a while waiting for the next job. The agent's cv2 work is small (a letterbox, the
motion stage's downscaled frame), so the pool saved nothing measurable in fps and its spinning was
a fifth of a motion-gated agent's CPU: 120 s still-scene video, INT8 at 320, 8.96 -> 7.21 CPU
seconds gated, 19.07 -> 18.52 ungated (`python -m benchmarks.motion_bench`). onnxruntime has
threads of its own and is not affected.
"""

from __future__ import annotations

import cv2


def opencv_on_calling_thread() -> None:
    """Process-wide: every later cv2 call in this process runs sequentially."""
    cv2.setNumThreads(1)
