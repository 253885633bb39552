"""The broker killed (kill -9) and restarted three times under a running agent.

The broker keeps nothing across a restart (no persistence), so whatever the observer gets after
one came from the agent: its outbox replay and its re-published retained state. The observer
has a password and the agent is anonymous, so after each restart the observer is subscribed
again before the agent is let in and replays (agent_process.start_gated_broker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.agent_process import (
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    Observer,
    distinct_events,
    looping_agent,
    outbox_events,
    retained,
    set_anonymous,
    wait_until,
)
from tests.broker import Broker
from tests.fault.processes import kill_broker

DEVICE = "fault-broker"
RESTARTS = 3
RECONNECT_MAX_S = 2  # the agent's backoff cap ([mqtt] reconnect_max_s) in this test
# Time from letting the agent in to its `online` arriving: one backoff step at most, plus the
# broker rereading its config (SIGHUP) and a loaded machine's scheduling.
RECONNECT_SLACK_S = 2.0


def statuses(observer: Observer) -> list[bytes]:
    return [m.payload for m in observer.on("status")]


def kill_and_restart(broker: Broker, observer: Observer, state: Path, restart: int) -> float:
    """Kill the broker, let events pile up, restart it; return seconds from letting the agent in to its `online`."""
    kill_broker(broker)
    began = time.time()
    wait_until(
        f"events stored during outage {restart}",
        lambda: len([e for e in outbox_events(state) if e["ts"] >= began]) >= 2,
        15,
    )
    # Long enough for the reconnect backoff to grow to its cap.
    time.sleep(max(0.0, began + 2 * RECONNECT_MAX_S - time.time()))
    held = {e["seq"] for e in outbox_events(state)}
    assert held, "events wait in the outbox while the broker is away"

    set_anonymous(broker, False)
    broker.start()
    observer.wait_subscribed(restart + 1, timeout=10)
    set_anonymous(broker, True)
    let_in = time.monotonic()
    observer.wait_for(
        f"`online` after restart {restart}",
        lambda: statuses(observer).count(b"online") == restart + 1,
        RECONNECT_MAX_S + RECONNECT_SLACK_S + 3,
    )
    took = round(time.monotonic() - let_in, 2)
    # Nothing persists in the broker: a retained `online` there is one the agent sent again.
    assert retained(broker.host, broker.port, DEVICE, ("status",))["status"].payload == b"online"
    observer.wait_for(
        f"the events held during outage {restart}",
        lambda: held <= {e["seq"] for e in observer.json("events")},
        timeout=15,
    )
    return took


@pytest.mark.fault
def test_three_broker_kills_lose_no_event_and_repeat_none(
    tmp_path: Path,
    gated_broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    broker, state = gated_broker, tmp_path / "state"
    observer = observe(broker, DEVICE, username=OBSERVER_USER, password=OBSERVER_PASSWORD)
    outages: list[float] = []  # time.time() of each kill
    reconnect_s: list[float] = []
    settings = {"events_end_after": 0.3, "mqtt_reconnect_max_s": RECONNECT_MAX_S}
    with looping_agent(tmp_path, broker, DEVICE, fixture_onnx, sample_video[0], state_dir=state, **settings) as agent:
        observer.wait_count("events", 3, timeout=30)
        for restart in range(1, RESTARTS + 1):
            outages.append(time.time())
            reconnect_s.append(kill_and_restart(broker, observer, state, restart))
        assert agent.running, "broker restarts never stop the agent"
        code, _ = agent.stop(timeout=5.0)
        assert code == 0, agent.describe()
        log = agent.stderr
    print(f"reconnect after each restart (s): {reconnect_s}")
    assert all(took <= RECONNECT_MAX_S + RECONNECT_SLACK_S for took in reconnect_s), reconnect_s
    # One line per outage, not one per failed attempt.
    assert log.count("; reconnecting") == RESTARTS and log.count("cannot reach") == RESTARTS, log

    observer.wait_for("stopped", lambda: statuses(observer)[-1:] == [b"stopped"], 5)
    # No `offline` ever: the agent never vanished, only the broker did.
    assert statuses(observer) == [b"online"] * (RESTARTS + 1) + [b"stopped"]
    events = distinct_events(observer.on("events"), *outages)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq is contiguous from 1: no event lost"
    repeats = len(observer.on("events")) - len(events)
    print(f"events: {len(events)} distinct, {repeats} QoS 1 re-deliveries of a message in flight at a kill")
    assert repeats <= RESTARTS, "at most the message in flight at each kill comes twice (QoS 1)"
    for began in outages:
        assert any(e["ts"] >= began for e in events), "events that happened during each outage arrived"
    assert outbox_events(state) == [], "every event was acknowledged before the clean stop"
    final = json.loads(retained(broker.host, broker.port, DEVICE, ("stats",))["stats"].payload)
    assert final["mqtt"]["reconnects"] == RESTARTS, final["mqtt"]
