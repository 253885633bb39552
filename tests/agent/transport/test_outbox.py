"""The durable outbox against a real SQLite file: order, sequence numbers, bounds, crashes and disk failures."""

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

from agent.transport.outbox import Outbox, OutboxMessage

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


def test_messages_come_back_in_order_and_go_when_removed(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "state" / "outbox.db", clock=clock) as outbox:
        ids = [outbox.add(f"t/{i}", f"p{i}".encode(), retain=i == 2) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert outbox.pending()[2] == OutboxMessage(ids[2], "t/2", b"p2", 1, True, clock.now)
        assert [m.id for m in outbox.pending(after_id=ids[1], limit=2)] == ids[2:4]
        outbox.remove(ids[0])
        outbox.remove(ids[0])  # an id already gone (acked twice, or dropped) is not an error
        assert outbox.count() == 4
        assert [m.payload for m in outbox.pending()] == [b"p1", b"p2", b"p3", b"p4"]
        outbox.remove_many([ids[1], ids[3], ids[0]])
        assert [m.payload for m in outbox.pending()] == [b"p2", b"p4"]


def test_ids_keep_rising_after_the_outbox_empties(tmp_path: Path) -> None:
    """A reader's 'after id N' watermark must stay valid when every row was acknowledged."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        first = outbox.add("t", b"a")
        outbox.remove(first)
        assert outbox.add("t", b"b") > first
    with Outbox(path) as outbox:
        assert outbox.add("t", b"c") > first + 1


def test_sequence_is_consecutive_and_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        seqs = [outbox.add_sequenced("events", lambda seq: json.dumps({"seq": seq}).encode()) for _ in range(3)]
        assert seqs == [1, 2, 3]
        assert outbox.add_sequenced("other", lambda seq: b"x", counter="other") == 1  # counters are independent
        with pytest.raises(RuntimeError):
            outbox.add_sequenced("events", lambda seq: (_ for _ in ()).throw(RuntimeError("build failed")))
        assert outbox.count() == 4  # the failed build stored nothing and took no number
    with Outbox(path) as outbox:
        assert outbox.add_sequenced("events", lambda seq: json.dumps({"seq": seq}).encode()) == 4
        assert [json.loads(m.payload)["seq"] for m in outbox.pending() if m.topic == "events"] == [1, 2, 3, 4]


def test_sequence_never_repeats_across_threads(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        seqs: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(25):
                seq = outbox.add_sequenced("events", lambda s: str(s).encode())
                with lock:
                    seqs.append(seq)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(seqs) == list(range(1, 101))
        # Payload and number were taken together: row order is number order.
        assert [int(m.payload) for m in outbox.pending(limit=200)] == list(range(1, 101))


def test_count_bound_drops_oldest_and_counts_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_messages=3) as outbox:
        for i in range(5):
            outbox.add("t", str(i).encode())
        assert [m.payload for m in outbox.pending()] == [b"2", b"3", b"4"]
        assert outbox.dropped == 2
    with Outbox(path, max_messages=3) as outbox:
        assert outbox.dropped == 2
        outbox.add("t", b"5")
        assert outbox.dropped == 3 and outbox.count() == 3


def test_age_bound_drops_old_messages_on_add(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", max_age_s=60, clock=clock) as outbox:
        outbox.add("t", b"old")
        clock.now += 30
        outbox.add("t", b"middle")
        clock.now += 31  # "old" is now 61 s old, "middle" 31 s
        outbox.add("t", b"new")
        assert [m.payload for m in outbox.pending()] == [b"middle", b"new"]
        assert outbox.dropped == 1


def test_bounds_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Outbox(tmp_path / "a.db", max_messages=0)
    with pytest.raises(ValueError, match="max_age_s"):
        Outbox(tmp_path / "b.db", max_age_s=0)


def test_added_messages_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    result = run_script(
        """
        import os, signal
        from pathlib import Path
        from agent.transport.outbox import Outbox
        outbox = Outbox(Path(sys.argv[1]))
        for i in range(3):
            outbox.add_sequenced("events", lambda seq: b"event %d" % seq)
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint
        """,
        str(path),
    )
    assert result.returncode == -9, result.stderr
    with Outbox(path) as outbox:
        assert [m.payload for m in outbox.pending()] == [b"event 1", b"event 2", b"event 3"]
        assert outbox.add_sequenced("events", lambda seq: b"") == 4


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
            from agent.transport.outbox import Outbox, OutboxError
            try:
                Outbox(Path(sys.argv[1])).add("t", b"x")
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


def test_disk_full_raises_outbox_error_and_the_outbox_recovers(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes past a size fail like a full disk, without root or a mount."""
    path = tmp_path / "outbox.db"
    result = run_script(
        """
        import json, resource, signal
        from pathlib import Path
        from agent.transport.outbox import Outbox, OutboxError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        path = Path(sys.argv[1])
        outbox = Outbox(path)
        outbox.add("t", b"before")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        largest = max(p.stat().st_size for p in path.parent.iterdir())
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 4096, hard))
        report = {}
        try:
            outbox.add("t", b"x" * 1_000_000)
        except OutboxError as error:
            report["error"] = str(error)
        try:
            outbox.add_sequenced("events", lambda seq: b"y" * 1_000_000)
        except OutboxError as error:
            report["seq_error"] = str(error)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
        outbox.add("t", b"after")
        report["seq"] = outbox.add_sequenced("events", lambda seq: b"z")
        report["payloads"] = [m.payload.decode() for m in outbox.pending()]
        outbox.close()
        print(json.dumps(report))
        """,
        str(path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert str(path) in report["error"] and "\n" not in report["error"]
    assert "seq_error" in report
    assert report["seq"] == 1  # the failed sequenced add took no number
    assert report["payloads"] == ["before", "after", "z"]
    with Outbox(path) as outbox:
        assert outbox.count() == 3
