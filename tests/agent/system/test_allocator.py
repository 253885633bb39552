"""The mmap threshold held low around a session's build, seen in glibc's own count of mmapped blocks.

Each check runs in a fresh interpreter: glibc serves a malloc from free heap space whatever the
threshold, so only a process whose heap holds no free block that large shows where a new one goes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.system import allocator

ROOT = Path(__file__).resolve().parents[3]
# 4 MiB: above the loading threshold, below the running one (a 640 model's input tensor is 4.9 MB).
PROBE = """
import ctypes, ctypes.util, threading
from agent.system import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd".split()
                + "usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)

def mmapped():
    before = libc.mallinfo2().hblks
    libc.malloc(4 * 1024 * 1024)  # kept: freeing it would leave heap space for the next probe
    return "mmap" if libc.mallinfo2().hblks == before + 1 else "heap"

"""


def _glibc_with_mallinfo2() -> None:
    if allocator._mallopt is None:
        pytest.skip("not glibc: the allocator keeps its defaults")
    code = "import ctypes, ctypes.util; ctypes.CDLL(ctypes.util.find_library('c')).mallinfo2"
    if subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0:
        pytest.skip("glibc older than 2.33 has no mallinfo2")


def _where_blocks_go(scenario: str) -> list[str]:
    _glibc_with_mallinfo2()
    done = subprocess.run(
        [sys.executable, "-c", PROBE + scenario], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_big_block_is_mmapped_while_a_session_is_built_and_from_the_heap_after() -> None:
    scenario = """
with allocator.freed_blocks_unmapped():
    print(mmapped())
print(mmapped())
"""
    assert _where_blocks_go(scenario) == ["mmap", "heap"]


def test_the_threshold_stays_low_until_the_last_of_overlapping_builds_ends() -> None:
    scenario = """
first_inside, second_done = threading.Event(), threading.Event()

def other_build():
    first_inside.wait(10)
    with allocator.freed_blocks_unmapped():
        pass
    second_done.set()

worker = threading.Thread(target=other_build)
worker.start()
with allocator.freed_blocks_unmapped():
    first_inside.set()
    second_done.wait(10)
    print(second_done.is_set(), mmapped())
worker.join(10)
print(mmapped())
"""
    assert _where_blocks_go(scenario) == ["True", "mmap", "heap"]


def test_a_failing_build_still_restores_the_running_threshold() -> None:
    scenario = """
try:
    with allocator.freed_blocks_unmapped():
        raise RuntimeError("bad model")
except RuntimeError:
    print(mmapped())
"""
    assert _where_blocks_go(scenario) == ["heap"]


def test_without_the_context_glibc_would_have_mmapped_the_block() -> None:
    """The control: the 'heap' answers above come from the running threshold, not from the probe."""
    assert _where_blocks_go("print(mmapped())") == ["mmap"]
