"""The exporter's parsing, its up/down rule and its metric families, on literal payloads and a fake clock.

The exporter as a process, against a real broker and agent, is tests/fleet/test_exporter.py.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.runtime.messages import lines_payload, zones_payload
from agent.transport import stats_schema
from agent.transport.encoding import dumps
from agent.transport.operator import Received
from fleet.exporter.command import Listen, parse_listen
from fleet.exporter.metrics import FleetCollector
from fleet.exporter.readings import Malformed, parse_lines, parse_stats, parse_status, parse_zones
from fleet.exporter.schema import LATENCY_METRICS, STATS_FIELDS
from fleet.exporter.state import DEFAULT_INTERVAL_S, FleetState
from tests.fleet.exporter_payloads import SHA, stats_body, stats_payload

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def message(device: str, kind: str, payload: bytes | str, at: float = NOW, retained: bool = False) -> Received:
    body = payload.encode() if isinstance(payload, str) else payload
    return Received(f"yolo-edge/{device}/{kind}", body, retained, at)


def scrape(state: FleetState) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# -- payloads ---------------------------------------------------------------------------------------


def test_stats_values_by_path() -> None:
    stats = parse_stats(stats_payload(NOW))
    assert stats.ts == NOW and stats.window_s == 1.0
    assert stats.values["frames.processed"] == 1200 and stats.values["mqtt.connected"] == 1.0
    assert stats.latency_ms["inference"] == {"p50": 41.23, "p95": 52.5, "max": 80.0}
    assert stats.model is not None and stats.model.sha256 == SHA


def test_every_exported_field_is_a_number_of_the_stats_message() -> None:
    """The exporter names fields by path; the message's own description (stats_schema) has every one of them."""
    assert {spec.path for spec in STATS_FIELDS} <= set(stats_schema.paths())
    values = parse_stats(stats_payload(NOW)).values
    assert set(values) == {".".join(spec.path) for spec in STATS_FIELDS}, "a full stats fills every metric"


def test_missing_sections_are_unknown_not_malformed() -> None:
    stats = parse_stats(dumps({"ts": NOW, "fps": 2.0}))
    assert dict(stats.values) == {"fps": 2.0} and stats.model is None and not stats.latency_ms


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"junk", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"[" * 100_000, "not JSON"),
        (dumps({"fps": 1.0}), "ts is not a Unix time"),
        (dumps(stats_body("soon")), "ts is not a Unix time"),
        (dumps(stats_body(NOW, fps="fast")), 'fps is "fast", not a number'),
        (dumps(stats_body(NOW, fps=True)), "fps is true, not a number"),
        (dumps(stats_body(NOW, frames={"processed": -1})), "frames.processed is -1, not a whole number >= 0"),
        (dumps(stats_body(NOW, frames={"processed": 1.5})), "frames.processed is 1.5, not a whole number >= 0"),
        (dumps(stats_body(NOW, frames=5)), "frames is not an object"),
        (dumps(stats_body(NOW, mqtt={"connected": "yes"})), 'mqtt.connected is "yes", not true or false'),
        (dumps(stats_body(NOW, latency_ms={"inference": {"p50": "x"}})), "latency_ms.inference.p50"),
        (dumps(stats_body(NOW, latency_ms={"bad stage": {}})), "is not a stage's figures"),
        (dumps(stats_body(NOW, model={"name": 5})), "model's name"),
        # Valid JSON, but beyond a float: float() raises OverflowError on them.
        (dumps(stats_body(10**400)), "ts is not a Unix time"),
        (dumps(stats_body(NOW, fps=-(10**400))), "fps is a 401-digit number, beyond what a float holds"),
        (dumps(stats_body(NOW, frames={"processed": 10**400})), "frames.processed is a 401-digit number"),
        (dumps(stats_body(NOW, latency_ms={"inference": {"p50": 10**400}})), "latency_ms.inference.p50 is a 401"),
        (b'{"ts": 1e400}', "ts is not a Unix time"),
    ],
)
def test_malformed_stats(payload: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=None) as raised:
        parse_stats(payload)
    assert reason in str(raised.value)


def test_zones() -> None:
    zones = parse_zones(zones_payload({"driveway": {"person": 1, "car": 0}, "door": {}}, NOW))
    assert zones.ts == NOW and zones.counts == {"driveway": {"person": 1, "car": 0}, "door": {}}


@pytest.mark.parametrize(
    "body",
    [
        {"ts": NOW},
        {"ts": NOW, "zones": []},
        {"ts": NOW, "zones": {"a": {"person": "1"}}},
        {"ts": NOW, "zones": {"a": [1]}},
        {"ts": NOW, "zones": {"a b": {}}},
        {"zones": {"a": {}}},
        {"ts": NOW, "zones": {"a": {"person": 10**400}}},
    ],
)
def test_malformed_zones(body: dict) -> None:
    with pytest.raises(Malformed):
        parse_zones(json.dumps(body).encode())


def test_status() -> None:
    assert [parse_status(p) for p in (b"online", b"offline", b"stopped\n")] == ["online", "offline", "stopped"]
    with pytest.raises(Malformed, match='"up" is none of online, offline, stopped'):
        parse_status(b"up")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9108", Listen("127.0.0.1", 9108)),
        (":9108", Listen("0.0.0.0", 9108)),
        ("[::1]:9", Listen("::1", 9)),
        ("localhost:65535", Listen("localhost", 65535)),
    ],
)
def test_listen(text: str, expected: Listen) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9108", "host:", "host:0", "host:65536", "::1:9108", "a:b:9", ""])
def test_bad_listen(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen(text)


# -- up and down ------------------------------------------------------------------------------------


def test_up_while_stats_keep_coming_and_down_after_three_intervals() -> None:
    clock = Clock()
    state = FleetState("yolo-edge", clock)
    state.handle(message("pi", "status", "online"))
    state.handle(message("pi", "stats", stats_payload(NOW, window_s=2.0)))
    clock.now = NOW + 5.9
    assert value(scrape(state), "yolo_edge_up", device="pi") == 1.0
    state.handle(message("pi", "stats", stats_payload(NOW + 2, window_s=2.0), at=NOW + 2))
    clock.now = NOW + 2 + 6.1
    samples = scrape(state)
    assert value(samples, "yolo_edge_up", device="pi") == 0.0
    assert value(samples, "yolo_edge_stats_interval_seconds", device="pi") == 2.0
    assert value(samples, "yolo_edge_last_seen_timestamp_seconds", device="pi") == NOW + 2
    assert value(samples, "yolo_edge_frames_per_second", device="pi") is None, "a down device's figures are not current"


def test_without_window_the_interval_is_the_gap_between_stats() -> None:
    clock = Clock()
    state = FleetState("yolo-edge", clock)
    body = stats_body(NOW)
    del body["window_s"]
    state.handle(message("pi", "stats", dumps(body)))
    assert value(scrape(state), "yolo_edge_stats_interval_seconds", device="pi") == DEFAULT_INTERVAL_S
    state.handle(message("pi", "stats", dumps(body | {"ts": NOW + 4}), at=NOW + 4))
    clock.now = NOW + 4 + 11.9
    samples = scrape(state)
    assert value(samples, "yolo_edge_stats_interval_seconds", device="pi") == 4.0
    assert value(samples, "yolo_edge_up", device="pi") == 1.0


@pytest.mark.parametrize("status", ["stopped", "offline"])
def test_stopped_or_offline_is_down_even_with_fresh_stats(status: str) -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "stats", stats_payload(NOW)))
    state.handle(message("pi", "status", status))
    samples = scrape(state)
    assert value(samples, "yolo_edge_up", device="pi") == 0.0
    assert value(samples, "yolo_edge_device_status", device="pi", status=status) == 1.0
    assert value(samples, "yolo_edge_device_status", device="pi", status="online") == 0.0


def test_retained_stats_count_from_their_own_time() -> None:
    """An exporter started today is handed last week's retained stats: that device is down."""
    state = FleetState("yolo-edge", Clock())
    state.handle(message("old", "status", "online", retained=True))
    state.handle(message("old", "stats", stats_payload(NOW - 7 * 86400), retained=True))
    state.handle(message("new", "stats", stats_payload(NOW - 0.5), retained=True))
    samples = scrape(state)
    assert value(samples, "yolo_edge_up", device="old") == 0.0
    assert value(samples, "yolo_edge_last_seen_timestamp_seconds", device="old") == NOW - 7 * 86400
    assert value(samples, "yolo_edge_up", device="new") == 1.0


def test_a_live_online_counts_until_the_first_stats() -> None:
    clock = Clock()
    state = FleetState("yolo-edge", clock)
    state.handle(message("pi", "stats", stats_payload(NOW - 3600, window_s=1.0), retained=True))  # the last run's
    state.handle(message("pi", "status", "online"))  # restarted: its first stats come in a while
    clock.now = NOW + 2.5
    assert value(scrape(state), "yolo_edge_up", device="pi") == 1.0
    clock.now = NOW + 3.5
    assert value(scrape(state), "yolo_edge_up", device="pi") == 0.0


def test_malformed_messages_are_counted_and_change_nothing() -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "stats", stats_payload(NOW)))
    state.handle(message("pi", "status", "online"))
    for payload in (b"junk", dumps(stats_body(NOW + 1, fps="fast")), b"[]"):
        state.handle(message("pi", "stats", payload))
    state.handle(message("pi", "status", "maybe"))
    state.handle(message("pi", "zones", b"{}"))
    state.handle(message("bad id", "stats", stats_payload(NOW)))
    state.handle(message("ghost", "stats", b"junk"))
    state.handle(message("huge", "stats", dumps(stats_body(NOW, frames={"processed": 10**400}))))
    state.handle(message("huge", "zones", zones_payload({"door": {"person": 10**400}}, NOW)))
    samples = scrape(state)
    assert value(samples, "yolo_edge_exporter_malformed_messages_total", topic="stats") == 6
    assert value(samples, "yolo_edge_exporter_malformed_messages_total", topic="status") == 1
    assert value(samples, "yolo_edge_exporter_malformed_messages_total", topic="zones") == 2
    assert value(samples, "yolo_edge_exporter_messages_total", topic="stats") == 7
    assert value(samples, "yolo_edge_frames_per_second", device="pi") == 7.94
    assert value(samples, "yolo_edge_device_status", device="pi", status="online") == 1.0
    assert value(samples, "yolo_edge_exporter_devices") == 1, "no device is made of malformed messages alone"


def test_a_malformed_topic_is_one_log_line_with_what_the_device_sent_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = FleetState("yolo-edge", Clock())
    for _ in range(3):  # a device that sends nothing readable has no state to remember the complaint on
        state.handle(message("ghost", "stats", b"junk"))
    state.handle(message("pi", "zones", dumps({"ts": NOW, "zones": {"door": {"\x1b[2J": "one"}}})))
    assert [record.getMessage() for record in caplog.records] == [
        "skipped a malformed stats from ghost: not JSON",
        'skipped a malformed zones from pi: zones.door.\\x1b[2J is "one", not a whole number >= 0',
    ]


def test_cleared_retained_messages_leave_no_series() -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "status", "online"))
    state.handle(message("pi", "stats", stats_payload(NOW)))
    state.handle(message("pi", "zones", zones_payload({"door": {"person": 1}}, NOW)))
    state.handle(message("pi", "zones", b""))
    assert value(scrape(state), "yolo_edge_zone_objects", device="pi", zone="door", label="person") is None
    state.handle(message("pi", "status", b""))
    state.handle(message("pi", "stats", b""))
    assert [key for key in scrape(state) if ("device", "pi") in key[1]] == []


def test_other_topics_and_prefixes_are_ignored() -> None:
    state = FleetState("site/yolo", Clock())
    state.handle(Received("site/yolo/pi/detections", b"junk", False, NOW))
    state.handle(Received("yolo-edge/pi/stats", stats_payload(NOW), False, NOW))
    state.handle(Received("site/yolo/pi/stats", stats_payload(NOW), False, NOW))
    samples = scrape(state)
    assert value(samples, "yolo_edge_exporter_devices") == 1
    assert value(samples, "yolo_edge_exporter_messages_total", topic="stats") == 1


# -- the metric families ----------------------------------------------------------------------------


def test_every_stats_field_in_base_units() -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "status", "online"))
    state.handle(message("pi", "stats", stats_payload(NOW)))
    samples = scrape(state)
    names = {name for name, _ in samples}
    expected = {spec.metric for spec in STATS_FIELDS} | {name for _, name, _ in LATENCY_METRICS}
    assert expected <= names, f"missing: {sorted(expected - names)}"
    assert value(samples, "yolo_edge_resident_memory_bytes", device="pi") == 180.5 * 1024 * 1024
    assert value(samples, "yolo_edge_stage_latency_p95_seconds", device="pi", stage="inference") == 0.0525
    assert value(samples, "yolo_edge_stage_latency_max_seconds", device="pi", stage="total") == 0.0905
    assert value(samples, "yolo_edge_mqtt_dropped_messages_total", device="pi", reason="outbox_age") == 2
    assert value(samples, "yolo_edge_frames_motion_skipped_total", device="pi") == 800
    assert value(samples, "yolo_edge_region_crops_total", device="pi") == 530
    assert value(samples, "yolo_edge_frames_regions_total", device="pi") == 390
    throttling = {
        c: value(samples, "yolo_edge_board_throttling", device="pi", condition=c)
        for c in ("under_voltage", "throttled", "frequency_capped")
    }
    assert throttling == {"under_voltage": 1.0, "throttled": 1.0, "frequency_capped": 0.0}
    info = [labels for name, labels in samples if name == "yolo_edge_model_info"]
    assert info == [(("device", "pi"), ("name", "shapes"), ("precision", "int8"), ("sha256", SHA[:12]))]


# -- counting lines ---------------------------------------------------------------------------------

DOOR = {"door": [[0.5, 0.0], [0.5, 1.0]]}


def door_lines(inward: dict[str, int], outward: dict[str, int], ts: float = NOW) -> bytes:
    """A retained `lines` as the agent builds it (agent/runtime/messages.py)."""
    return lines_payload({"door": {"in": inward, "out": outward}}, NOW - 3600, ts, DOOR)


def test_lines() -> None:
    lines = parse_lines(door_lines({"person": 3, "dog": 0}, {}))
    assert lines.ts == NOW and lines.counts == {"door": {"in": {"person": 3, "dog": 0}, "out": {}}}


@pytest.mark.parametrize(
    "body",
    [
        {"ts": NOW},
        {"ts": NOW, "lines": []},
        {"ts": NOW, "lines": {"door": {"in": {"person": "1"}}}},
        {"ts": NOW, "lines": {"door": {"in": {"person": -1}}}},
        {"ts": NOW, "lines": {"door": {"in": {"person": 1.5}}}},
        {"ts": NOW, "lines": {"door": {"across": {"person": 1}}}},
        {"ts": NOW, "lines": {"door": {"in": [1]}}},
        {"ts": NOW, "lines": {"door": []}},
        {"ts": NOW, "lines": {"a b": {"in": {}}}},
        {"ts": NOW, "lines": {"door": {"in": {"": 1}}}},
        {"lines": {"door": {"in": {}}}},
        {"ts": NOW, "lines": {"door": {"in": {"person": 10**400}}}},
    ],
)
def test_malformed_lines(body: dict) -> None:
    with pytest.raises(Malformed):
        parse_lines(json.dumps(body).encode())


def test_line_crossings_per_device_line_direction_and_label() -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "status", "online"))
    state.handle(message("pi", "stats", stats_payload(NOW)))
    state.handle(message("pi", "lines", door_lines({"person": 3}, {"person": 1, "car": 2})))
    samples = scrape(state)
    crossings = {labels: count for (name, labels), count in samples.items() if name == "yolo_edge_line_crossings_total"}
    assert crossings == {
        (("device", "pi"), ("direction", "in"), ("label", "person"), ("line", "door")): 3.0,
        (("device", "pi"), ("direction", "out"), ("label", "car"), ("line", "door")): 2.0,
        (("device", "pi"), ("direction", "out"), ("label", "person"), ("line", "door")): 1.0,
    }
    state.handle(message("pi", "lines", door_lines({}, {})))  # the daily reset: nothing crossed yet today
    assert not [name for name, _ in scrape(state) if name == "yolo_edge_line_crossings_total"]
    state.handle(message("pi", "lines", door_lines({"person": 1}, {})))
    state.handle(message("pi", "status", "stopped"))
    assert (
        value(scrape(state), "yolo_edge_line_crossings_total", device="pi", line="door", direction="in", label="person")
        is None
    ), "a down device's counts are not current"


def test_malformed_lines_are_counted_and_a_cleared_lines_leaves_no_series(caplog: pytest.LogCaptureFixture) -> None:
    state = FleetState("yolo-edge", Clock())
    state.handle(message("pi", "status", "online"))
    state.handle(message("pi", "stats", stats_payload(NOW)))
    state.handle(message("pi", "lines", door_lines({"person": 2}, {})))
    for payload in (
        b"{",
        dumps({"ts": NOW, "lines": {"door": {"in": {"person": "two"}}}}),
        door_lines({"person": 10**400}, {}),
    ):
        state.handle(message("pi", "lines", payload))
    state.handle(message("huge", "lines", door_lines({"person": 10**400}, {})))
    samples = scrape(state)
    assert value(samples, "yolo_edge_exporter_malformed_messages_total", topic="lines") == 4
    assert value(samples, "yolo_edge_exporter_messages_total", topic="lines") == 5
    where = {"device": "pi", "line": "door", "direction": "in", "label": "person"}
    assert value(samples, "yolo_edge_line_crossings_total", **where) == 2, "the last good lines still stand"
    assert value(samples, "yolo_edge_exporter_devices") == 1, "no device is made of malformed lines alone"
    assert "skipped a malformed lines from huge: lines.door.in.person is a 401-digit number" in caplog.text
    state.handle(message("pi", "lines", b""))
    assert value(scrape(state), "yolo_edge_line_crossings_total", **where) is None
