"""The durable outbox against a real SQLite file, through what production calls: order, numbers, bounds, crashes, disks.

Production reaches the outbox two ways: the spool numbers and queues QoS 1 messages and the courier's
thread stores them with `Outbox.store` (SpoolWriter wires the two as MqttPublisher does, without a
broker); the courier deletes acknowledged rows with the `remove` of its next `store`, so the tests of
row order, ids and bounds call `store` directly.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.transport.outbox import NewMessage, Outbox, OutboxMessage
from tests.agent.transport.spool_writer import SpoolWriter

ROOT = Path(__file__).resolve().parents[3]


class FakeClock:
    """Unix seconds that only move when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_script(
    source: str, *args: str, timeout: float = 20.0, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet (project root importable) in a child process and return its result."""
    script = "import sys; sys.path.insert(0, " + repr(str(ROOT)) + ")\n" + textwrap.dedent(source)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def numbered(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def payloads(outbox: Outbox) -> list[bytes]:
    return [m.payload for m in outbox.pending(limit=1000)]


def test_stored_messages_come_back_in_order_and_go_once_acknowledged(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "state" / "outbox.db", clock=clock) as outbox:
        ids = outbox.store([NewMessage(f"t/{i}", f"p{i}".encode(), retain=i == 2) for i in range(3)])
        ids += outbox.store([NewMessage(f"t/{i}", f"p{i}".encode()) for i in range(3, 5)])
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert outbox.pending()[2] == OutboxMessage(ids[2], "t/2", b"p2", 1, True, clock.now)
        assert [m.id for m in outbox.pending(after_id=ids[1], limit=2)] == ids[2:4]
        # The courier deletes acknowledged rows with its next store, which may bring nothing new.
        assert outbox.store([], remove=[ids[0]]) == []
        outbox.store([], remove=[ids[0]])  # an id already gone (acked twice, or dropped) is not an error
        assert outbox.count() == 4
        assert payloads(outbox) == [b"p1", b"p2", b"p3", b"p4"]
        outbox.store([NewMessage("t/5", b"p5")], remove=[ids[1], ids[3], ids[0]])
        assert payloads(outbox) == [b"p2", b"p4", b"p5"] and outbox.count() == 3


def test_ids_keep_rising_after_the_outbox_empties(tmp_path: Path) -> None:
    """The courier's 'after id N' watermark must stay valid when every row was acknowledged, across a restart too."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        (first,) = outbox.store([NewMessage("t", b"a")])
        (second,) = outbox.store([NewMessage("t", b"b")], remove=[first])
        assert second > first
        outbox.store([], remove=[second])
        assert outbox.count() == 0
    with Outbox(path) as outbox:
        assert outbox.store([NewMessage("t", b"c")])[0] > second


def test_numbers_are_consecutive_per_counter_and_continue_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox, SpoolWriter(outbox) as writer:
        assert [writer.sequenced("events", numbered) for _ in range(3)] == [1, 2, 3]
        assert writer.sequenced("objects", numbered) == 1  # counters are independent
        with pytest.raises(RuntimeError):
            writer.sequenced("events", lambda seq: (_ for _ in ()).throw(RuntimeError("build failed")))
        assert writer.sequenced("events", numbered) == 4, "the failed build took no number"
        writer.wait_stored()
        assert outbox.count() == 5, "the failed build queued nothing"
        assert outbox.counters() == {"events": 4, "objects": 1}, "each number is stored with its message"
    with Outbox(path) as outbox, SpoolWriter(outbox) as writer:
        assert writer.sequenced("events", numbered) == 5
        assert writer.sequenced("objects", numbered) == 2
        writer.wait_stored()
        assert [json.loads(m.payload)["seq"] for m in outbox.pending() if m.topic == "events"] == [1, 2, 3, 4, 5]


def test_numbers_never_repeat_across_threads_and_rows_keep_their_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox, SpoolWriter(outbox) as writer:
        seqs: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(25):
                seq = writer.sequenced("events", lambda s: str(s).encode())
                with lock:
                    seqs.append(seq)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        writer.wait_stored()
        assert sorted(seqs) == list(range(1, 101))
        # Payload and number were queued together while the courier stored: row order is number order.
        assert [int(p) for p in payloads(outbox)] == list(range(1, 101))
        assert outbox.counter("events") == 100


def test_count_bound_drops_oldest_and_counts_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_messages=3) as outbox:
        for i in range(2):
            outbox.store([NewMessage("t", b"%d" % i)])
        outbox.store([NewMessage("t", b"%d" % i) for i in range(2, 5)])
        assert payloads(outbox) == [b"2", b"3", b"4"]
        assert (outbox.dropped, outbox.dropped_full, outbox.dropped_age) == (2, 2, 0)
    with Outbox(path, max_messages=3) as outbox:
        assert outbox.dropped == 2
        # A batch larger than the room: the oldest go first, its own first rows too.
        outbox.store([NewMessage("t", b"%d" % i) for i in range(5, 9)])
        assert payloads(outbox) == [b"6", b"7", b"8"]
        assert (outbox.dropped, outbox.dropped_full, outbox.count()) == (6, 6, 3)


def test_age_bound_drops_old_messages_when_messages_are_stored(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", max_age_s=60, clock=clock) as outbox:
        outbox.store([NewMessage("t", b"old")])
        clock.now += 30
        outbox.store([NewMessage("t", b"middle")])
        clock.now += 31  # "old" is now 61 s old, "middle" 31 s
        outbox.store([NewMessage("t", b"new")])
        assert payloads(outbox) == [b"middle", b"new"]
        assert (outbox.dropped, outbox.dropped_age, outbox.dropped_full, outbox.count()) == (1, 1, 0, 2)


def test_bounds_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Outbox(tmp_path / "a.db", max_messages=0)
    with pytest.raises(ValueError, match="max_age_s"):
        Outbox(tmp_path / "b.db", max_age_s=0)


def test_stored_messages_survive_kill_9_and_their_numbers_are_not_given_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    result = run_script(
        """
        import os, signal
        from pathlib import Path
        from agent.transport.outbox import Outbox
        from tests.agent.transport.spool_writer import SpoolWriter
        writer = SpoolWriter(Outbox(Path(sys.argv[1])))
        for _ in range(3):
            writer.sequenced("events", lambda seq: b"event %d" % seq)
        writer.wait_stored()
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint
        """,
        str(path),
    )
    assert result.returncode == -9, result.stderr
    with Outbox(path) as outbox, SpoolWriter(outbox) as writer:
        assert payloads(outbox) == [b"event 1", b"event 2", b"event 3"]
        assert writer.sequenced("events", numbered) == 4


def _without_root_file_powers() -> None:
    """preexec_fn: drop the capabilities that let root write anywhere, so permission bits apply to the child."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP; execve then recomputes root's caps
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_directory_raises_outbox_error_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        result = run_script(
            """
            import json
            from pathlib import Path
            from agent.transport.outbox import NewMessage, Outbox, OutboxError
            try:
                Outbox(Path(sys.argv[1])).store([NewMessage("t", b"x")])
            except OutboxError as error:
                print(json.dumps({"error": str(error)}))
            """,
            str(state / "outbox.db"),
            preexec_fn=_without_root_file_powers if os.geteuid() == 0 else None,
        )
    finally:
        state.chmod(0o755)
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout)["error"]
    assert str(state / "outbox.db") in message and "\n" not in message


def test_disk_full_stores_nothing_of_the_batch_and_the_outbox_recovers(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes past a size fail like a full disk, without root or a mount."""
    path = tmp_path / "outbox.db"
    result = run_script(
        """
        import json, resource, signal
        from pathlib import Path
        from agent.transport.outbox import NewMessage, Outbox, OutboxError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        path = Path(sys.argv[1])
        outbox = Outbox(path)
        (before,) = outbox.store([NewMessage("t", b"before")])
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        largest = max(p.stat().st_size for p in path.parent.iterdir())
        # Room for a small commit, none for the large row: a batch that stored in parts would show.
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 64 * 1024, hard))
        first = NewMessage("events", b"1", counter="events", seq=1)  # what the spool hands the courier
        report = {"committed": 0}
        def committed():
            report["committed"] += 1
        try:  # a numbered row, a large row and an acknowledged row, as one courier round may bring
            outbox.store([first, NewMessage("t", b"x" * 1_000_000)], remove=[before], on_commit=committed)
        except OutboxError as error:
            report["error"] = str(error)
        report["counter"] = outbox.counter("events")
        report["during"] = [m.payload.decode() for m in outbox.pending()]
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
        outbox.store([first], remove=[before])  # the courier tries the same batch again, number and all
        outbox.store([NewMessage("t", b"after")])
        report["counter_after"] = outbox.counter("events")
        report["payloads"] = [m.payload.decode() for m in outbox.pending()]
        outbox.close()
        print(json.dumps(report))
        """,
        str(path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert str(path) in report["error"] and "\n" not in report["error"]
    assert report["committed"] == 0, "on_commit runs only for a store that committed"
    assert report["counter"] == 0, "the failed store kept no number"
    assert report["during"] == ["before"], "nor any row, nor the deletion"
    assert (report["counter_after"], report["payloads"]) == (1, ["1", "after"])
    with Outbox(path) as outbox:
        assert outbox.count() == 2 and outbox.counter("events") == 1
