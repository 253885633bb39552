"""OpenCV's worker threads: none are started once the agent turned its pool off.

Each check runs in a fresh interpreter, since cv2's pool, once started, lives as long as the process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# A blur and a resize big enough for cv2 to split them over its pool; prints the threads before and after.
PROBE = """
import os, numpy as np, cv2
from agent.system.opencv_threads import opencv_on_calling_thread
{setup}
before = len(os.listdir("/proc/self/task"))
frame = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
for _ in range(3):
    cv2.resize(cv2.GaussianBlur(frame, (21, 21), 0), (640, 640))
print(cv2.getNumThreads(), len(os.listdir("/proc/self/task")) - before)
"""


def _threads_started(setup: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pool, started = done.stdout.split()
    return int(pool), int(started)


def test_no_worker_thread_is_started_once_the_pool_is_off() -> None:
    assert _threads_started("opencv_on_calling_thread()") == (1, 0)


def test_without_it_cv2_starts_workers_on_a_machine_with_cores_to_spare() -> None:
    """The control: the probe's calls are big enough to reach the pool where there is one."""
    pool, started = _threads_started("")
    if pool <= 1:
        pytest.skip("one core: cv2 has no pool to start")
    assert started >= 1
