"""The state directory's disk fills up under a running agent, then space comes back.

A full disk is made without root or a mount: RLIMIT_FSIZE, set on the running agent with
prlimit(2), makes every write that would grow a file past the limit fail with EFBIG, as
ENOSPC would. The limit is the size of the largest file in the state directory at that
moment, so the outbox's next commit fails while the files the agent only reads do not care.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.agent_process import Observer, distinct_events, looping_agent, outbox_events
from tests.broker import Broker
from tests.fault.processes import largest_file, limit_file_size

DEVICE = "fault-disk"
FULL_FOR_S = 4.0  # long enough for several events to be held and several stats to report it


def frames_published(observer: Observer, since: float) -> list[int]:
    return [m.json()["frame"] for m in observer.on("detections") if m.at >= since]


@pytest.mark.fault
def test_a_full_disk_holds_events_in_memory_and_sends_them_when_space_returns(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    state = tmp_path / "state"
    observer = observe(broker, DEVICE)
    settings = {"events_end_after": 0.3}
    with looping_agent(tmp_path, broker, DEVICE, fixture_onnx, sample_video[0], state_dir=state, **settings) as agent:
        observer.wait_count("events", 2, timeout=30)
        limit = largest_file(state)
        # The agent's log file is capped too: it must have room for the lines this test waits for.
        assert agent.stderr_path.stat().st_size < limit // 2, "the log is too close to the outbox's size"
        limit_file_size(agent.process.pid, limit)
        # The outbox's writer runs on its own thread: a batch it wrote between the measuring and the
        # limit taking hold may have grown a file past `limit`; from now on no file grows at all.
        ceiling = max(limit, largest_file(state))
        full_since = time.time()
        agent.wait_log("events held in memory", timeout=15)
        time.sleep(FULL_FOR_S)
        during = [s for s in observer.json("stats") if s["ts"] >= full_since]
        assert any(s["events"]["held"] >= 1 and s["mqtt"]["outbox_errors"] >= 1 for s in during), during[-1:]
        assert len(set(frames_published(observer, full_since))) >= 8, "detection goes on while the disk is full"
        assert largest_file(state) <= ceiling, "nothing grew past the limit: the disk really was full"
        assert agent.running

        limit_file_size(agent.process.pid, None)
        freed = time.time()
        agent.wait_log("outbox writable again; held events sent", timeout=15)
        observer.wait_for(
            "stats saying nothing is held any more",
            lambda: any(s["ts"] >= freed and s["events"]["held"] == 0 for s in observer.json("stats")),
            timeout=10,
        )
        observer.wait_for(
            "events of the full-disk time delivered",
            lambda: any(full_since <= e["ts"] <= freed for e in observer.json("events")),
            timeout=10,
        )
        code, _ = agent.stop(timeout=5.0)
        assert code == 0, agent.describe()
        log = agent.stderr
    observer.wait_for("stopped", lambda: [m.payload for m in observer.on("status")][-1:] == [b"stopped"], 5)
    held_peak = max(s["events"]["held"] for s in observer.json("stats"))
    errors = max(s["mqtt"]["outbox_errors"] for s in observer.json("stats"))
    print(f"disk full for {freed - full_since:.1f} s: up to {held_peak} events held, {errors} outbox errors")
    events = distinct_events(observer.on("events"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "no event lost, none numbered twice"
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events), "held events went out in order"
    assert all(s["events"]["lost"] == 0 for s in observer.json("stats"))
    assert log.count("events held in memory") == 1, "one warning per full-disk spell, not one per event"
    assert "Traceback" not in log
    assert outbox_events(state) == []
