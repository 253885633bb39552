"""glibc's mmap threshold, held low while an onnxruntime session is built so that what it frees leaves.

glibc serves a block of 128 KiB or more with its own mmap, but after the first such block is freed it
raises that threshold to the freed size (up to 32 MiB) and serves the next ones from the heap, where
freed memory stays in the process. Building a session allocates and frees many weight-sized blocks
(the graph optimizer's copies, pre-packing), so the agent kept megabytes it never used again. Held at
128 KiB while a session is built, those blocks are unmapped when freed: YOLOv8s at 640, peak RSS
235 -> 215 MB FP32, 161 -> 157 MB INT8. Afterwards it is fixed at 32 MiB (the most glibc would raise
it to), so a frame's buffers come from the heap and are reused: held at 128 KiB for good, every frame
maps and faults in its buffers afresh (235 more page faults a frame, 1.5 % slower).
Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LOADING_THRESHOLD_BYTES = 128 * 1024  # glibc's starting value
RUNNING_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit

_lock = threading.Lock()
_loading = 0


def _find_mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return None
    if mallopt is not None:
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
    return mallopt


_mallopt = _find_mallopt()


def set_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold (which also stops glibc raising it); True when it took effect."""
    return _mallopt is not None and _mallopt(M_MMAP_THRESHOLD, threshold_bytes) == 1


@contextmanager
def freed_blocks_unmapped() -> Iterator[None]:
    """Around a session's build: its big temporary blocks are mmapped and so returned when freed.

    Nested or concurrent builds (a deployment probing a model while the loop runs) hold the low
    threshold until the last one ends."""
    global _loading
    with _lock:
        _loading += 1
        if _loading == 1:
            set_mmap_threshold(LOADING_THRESHOLD_BYTES)
    try:
        yield
    finally:
        with _lock:
            _loading -= 1
            if _loading == 0:
                set_mmap_threshold(RUNNING_THRESHOLD_BYTES)
