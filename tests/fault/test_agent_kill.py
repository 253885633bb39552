"""kill -9 of the agent while the broker is down, twice, with events waiting in its outbox.

The second agent starts while the broker is still away and numbers its events on from the
counter the first one stored; the third finds the broker back and must send everything both
left behind, in order, before its own events, with seq never repeating and never skipping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.agent_process import (
    AgentProcess,
    Observer,
    distinct_events,
    looping_agent,
    outbox_events,
    retained,
    wait_until,
)
from tests.broker import Broker
from tests.fault.processes import kill_broker

DEVICE = "fault-kill"


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


@pytest.mark.fault
def test_pending_events_of_two_killed_agents_go_out_in_order(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    state, video = tmp_path / "state", sample_video[0]
    observer = observe(broker, DEVICE)

    def agent(name: str) -> AgentProcess:
        return looping_agent(tmp_path, broker, DEVICE, fixture_onnx, video, state, name, events_end_after=0.3)

    with agent("first") as first:
        observer.wait_count("events", 2, timeout=30)
        kill_broker(broker)
        outage = time.time()
        wait_until("events stored while the broker is down", lambda: len(outbox_events(state)) >= 3, 15)
        first.kill()
    stored_first = outbox_events(state)
    delivered = distinct_events(observer.on("events"), outage)
    assert seqs(stored_first) == list(range(stored_first[0]["seq"], stored_first[-1]["seq"] + 1))
    assert stored_first[0]["seq"] <= delivered[-1]["seq"] + 1, "nothing lost between the delivered and the stored"

    with agent("second") as second:  # the broker is still down
        wait_until(
            "the second agent's own events stored behind the first's",
            lambda: len(outbox_events(state)) >= len(stored_first) + 3,
            30,
        )
        second.kill()
    stored = outbox_events(state)
    assert stored[: len(stored_first)] == stored_first, "a new run leaves what an old one stored alone"
    assert seqs(stored) == list(range(stored[0]["seq"], stored[-1]["seq"] + 1)), "seq went on from the stored counter"

    broker.start()
    observer.wait_subscribed(2, timeout=10)  # the observer is back before the agent replays
    restarted = time.time()
    with agent("third") as third:
        observer.wait_for(
            "everything the killed agents stored, then new events",
            lambda: len([m for m in observer.on("events") if m.at >= restarted]) >= len(stored) + 2,
            timeout=30,
        )
        assert retained(broker.host, broker.port, DEVICE, ("status",))["status"].payload == b"online"
        code, _ = third.stop(timeout=5.0)
        assert code == 0, third.describe()
    observer.wait_for("stopped", lambda: [m.payload for m in observer.on("status")][-1:] == [b"stopped"], 5)

    after = [m.json() for m in observer.on("events") if m.at >= restarted]
    assert after[: len(stored)] == stored, "what the killed agents stored goes out first, in order"
    assert after[len(stored)]["seq"] == stored[-1]["seq"] + 1, "the third run numbers on from the last stored"
    events = distinct_events(observer.on("events"), outage)
    assert seqs(events) == list(range(1, len(events) + 1)), "seq never repeats, never skips, across three runs"
    assert outbox_events(state) == []
    print(f"stored by the first agent: {len(stored_first)}, by both: {len(stored)}, events in all: {len(events)}")
