"""BoardHealth: stats never wait for vcgencmd; its answer arrives from a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.system.board import BoardHealth


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


class SlowVcgencmd:
    """Stands in for `vcgencmd get_throttled`: blocks until let go, records the thread it ran on."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.go = threading.Event()
        self.threads: list[str] = []

    def __call__(self) -> int:
        self.threads.append(threading.current_thread().name)
        self.go.wait(10)
        return self.value


def test_a_snapshot_does_not_wait_for_the_throttling_flags() -> None:
    vcgencmd = SlowVcgencmd(0x50005)
    board = BoardHealth(refresh_s=60.0, read_throttled=vcgencmd)
    first = board.snapshot()  # vcgencmd is blocked: this must return anyway
    assert "throttled" not in first and first["rss_mb"] > 0
    assert wait_until(lambda: vcgencmd.threads, 5), "the flags were never asked for"
    assert vcgencmd.threads == ["board-health"], "vcgencmd ran on the caller's thread"
    vcgencmd.go.set()
    assert wait_until(lambda: "throttled" in board.snapshot(), 5)
    assert board.snapshot()["throttled"] == 0x50005


def test_refreshes_are_spaced_and_never_overlap() -> None:
    vcgencmd = SlowVcgencmd(1)
    board = BoardHealth(refresh_s=60.0, read_throttled=vcgencmd)
    for _ in range(20):
        board.snapshot()
    assert wait_until(lambda: vcgencmd.threads, 5)
    vcgencmd.go.set()
    assert wait_until(lambda: "throttled" in board.snapshot(), 5)
    assert len(vcgencmd.threads) == 1, "asked again before refresh_s had passed"


def test_a_board_without_vcgencmd_reports_no_flags() -> None:
    calls: list[int] = []

    def absent() -> int | None:
        calls.append(1)
        return None

    board = BoardHealth(refresh_s=0.0, read_throttled=absent)
    board.snapshot()
    assert wait_until(lambda: calls, 5)
    assert "throttled" not in board.snapshot()
