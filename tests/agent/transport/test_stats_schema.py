"""The `stats` message's one description (agent/transport/stats_schema.py): how a received one reads.

What the agent writes with it is tests/agent/runtime/test_stats_message.py; the fleet's two readers on top of
it are tests/fleet/test_cli.py and test_exporter_state.py, and a stats the agent really sent is read by both in
tests/agent/test_agent_run.py.
"""

from __future__ import annotations

import json

import pytest

from agent.transport import stats_schema
from agent.transport.stats_schema import FrameCounts, ModelIdentity, MqttFigures, Parsed, StageLatency, Stats

NOW = 1_800_000_000.0


def test_what_a_message_lacks_is_none_and_what_it_adds_is_ignored() -> None:
    parsed = stats_schema.parse({"ts": NOW, "fps": 2, "frames": {"processed": 5, "new_count": 1}, "newer": [1]})
    assert parsed == Parsed(Stats(ts=NOW, fps=2.0, frames=FrameCounts(processed=5)))
    assert stats_schema.encode(parsed.stats) == b'{"ts":1800000000.0,"fps":2.0,"frames":{"processed":5}}'


def test_null_says_nothing() -> None:
    parsed = stats_schema.parse({"ts": NOW, "cpu_temp_c": None, "tracks": None, "mqtt": {"outbox_set_aside": None}})
    assert parsed == Parsed(Stats(ts=NOW, mqtt=MqttFigures()))


def test_a_field_of_the_wrong_type_is_none_and_named_in_message_order() -> None:
    body = {
        "ts": NOW,
        "fps": "fast",
        "latency_ms": {"inference": {"p50": 41.5, "p95": [1]}, "bad stage": {}},
        "frames": {"processed": 2.0, "dropped": -1, "stale": 1.5},
        "tracks": 3,
        "model": {"name": "shapes", "precision": 8},
        "mqtt": {"connected": "yes", "outbox_pending": 10**400},
    }
    parsed = stats_schema.parse(body)
    assert parsed.stats == Stats(
        ts=NOW,
        latency_ms={"inference": StageLatency(p50=41.5)},
        frames=FrameCounts(processed=2),  # a whole number, written 2.0, is a count
        model=ModelIdentity(name="shapes"),
        mqtt=MqttFigures(),
    )
    assert parsed.problems == (
        'fps is "fast", not a number',
        "latency_ms.inference.p95 is [1], not a number",
        'latency_ms."bad stage" is not a stage\'s figures',
        "frames.dropped is -1, not a whole number >= 0",
        "frames.stale is 1.5, not a whole number >= 0",
        "tracks is not an object",
        "model's name, precision and sha256 are not all texts",  # once, for the two fields it covers
        'mqtt.connected is "yes", not true or false',
        "mqtt.outbox_pending is a 401-digit number, beyond what a float holds",
    )


@pytest.mark.parametrize("ts", [None, "soon", 0, -5.0, True, 10**400, float("inf")])
def test_ts_is_what_a_reader_cannot_do_without(ts: object) -> None:
    body = {"fps": 1.0} if ts is None else {"ts": ts, "fps": 1.0}
    assert stats_schema.parse(json.loads(json.dumps(body))) == Parsed(Stats(fps=1.0), ("ts is not a Unix time",))


def test_paths_name_every_figure_in_message_order() -> None:
    paths = stats_schema.paths()
    assert paths[:3] == (("ts",), ("fps",), ("window_s",))
    assert ("frames", "motion_skipped") in paths and ("mqtt", "outbox_set_aside") in paths
    assert paths[-1] == ("source", "last_error")
    assert len(paths) == len(set(paths))
