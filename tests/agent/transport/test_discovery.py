"""Home Assistant discovery: the payload Home Assistant reads, the labels that get entities, the re-send timer.

The agent announcing itself over a real broker is in tests/agent/control/test_remote_e2e.py. Templates are
rendered with Jinja2 in a sandbox the way Home Assistant renders them (`value`, `value_json`),
against payloads the agent's own code builds.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.pipeline.results import StageTimings
from agent.pipeline.stats import StatsWindow
from agent.runtime.messages import lines_payload, presence_payload, zones_payload
from agent.transport.discovery import (
    DiscoveryAnnouncer,
    DiscoveryDevice,
    classes_of_interest,
    discovery_payload,
    discovery_topic,
    package_version,
)
from agent.transport.discovery_record import DiscoveryRecord, announced, with_removals

NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "star"}
COCO_LIKE = {i: f"label{i}" for i in range(80)}
DEVICE = DiscoveryDevice("pi-4", "yolo-edge/pi-4", "shapes", ("circle", "star"), "1.2.3", "https://example.org/y")

# Home Assistant's platforms and, for each, what a discovered entity must carry to be set up.
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "image": {"image_topic"},
}


def render(template: str, payload: bytes) -> str:
    """The template rendered as Home Assistant's MQTT integration does for a message."""
    env = ImmutableSandboxedEnvironment()
    text = payload.decode("utf-8")
    try:
        value_json: Any = json.loads(text)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value=text, value_json=value_json).strip()


def check_discovery(body: dict[str, Any], device: DiscoveryDevice) -> dict[str, dict[str, Any]]:
    """Every field Home Assistant requires of a device-based discovery message; returns the components."""
    assert {"dev", "o", "cmps"} <= set(body), body
    dev = body["dev"]
    assert dev["ids"] and all(isinstance(i, str) and i for i in dev["ids"])
    assert dev["name"] == device.device_id
    assert device.model in dev["mdl"] and dev["sw"] == device.version and dev["mf"]
    assert body["o"]["name"] == "yolo-edge" and body["o"]["sw"] == device.version
    (availability,) = body["availability"]
    assert availability["topic"] == f"{device.topic_prefix}/status"
    assert availability["payload_available"] == "online" and availability["payload_not_available"] == "offline"
    for status, expected in ((b"online", "online"), (b"offline", "offline"), (b"stopped", "offline")):
        assert render(availability["value_template"], status) == expected, status
    components = {key: c for key, c in body["cmps"].items() if set(c) != {"p"}}  # the rest are removals
    assert all(c["p"] in REQUIRED for c in body["cmps"].values()), body["cmps"]
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids), "unique_id is unique"
    for key, component in components.items():
        assert REQUIRED[component["p"]] <= set(component), (key, component)
        assert component["unique_id"] and component["name"]
        topic = component.get("state_topic") or component["image_topic"]
        assert topic.startswith(f"{device.topic_prefix}/"), topic
    return components


def stats_payload(frames: int) -> bytes:
    """The stats fields the templates read, as the agent's StatsWindow makes them."""
    window = StatsWindow(started_mono=time.monotonic() - 2.0)
    for i in range(frames):
        window.add(StageTimings(capture=1.0, preprocess=2.0, inference=20.0 + i, postprocess=1.0))
    return json.dumps(window.summary()).encode()


def test_topic_and_device() -> None:
    assert discovery_topic("homeassistant", "pi-4") == "homeassistant/device/pi-4/config"
    assert discovery_topic("home/ha", "cam_2") == "home/ha/device/cam_2/config"
    body = discovery_payload(DEVICE)
    check_discovery(body, DEVICE)
    assert body["dev"]["ids"] == ["yolo_edge_pi-4"]
    assert body["o"]["url"] == "https://example.org/y"
    without_url = discovery_payload(DiscoveryDevice("pi-4", "yolo-edge/pi-4", "shapes", (), "1.2.3"))
    assert "url" not in without_url["o"], "no made-up support URL"
    assert json.loads(json.dumps(body)) == body


def test_components() -> None:
    components = check_discovery(discovery_payload(DEVICE), DEVICE)
    assert set(components) == {
        "connectivity",
        "fps",
        "inference_p50",
        "count_circle",
        "present_circle",
        "count_star",
        "present_star",
        "snapshot",
    }
    assert components["connectivity"]["p"] == "binary_sensor"
    assert components["connectivity"]["device_class"] == "connectivity"
    assert components["connectivity"]["state_topic"] == "yolo-edge/pi-4/status"
    assert components["fps"]["state_topic"] == components["inference_p50"]["state_topic"] == "yolo-edge/pi-4/stats"
    assert components["inference_p50"]["unit_of_measurement"] == "ms"
    assert components["count_star"]["state_topic"] == "yolo-edge/pi-4/presence"
    assert components["present_star"]["p"] == "binary_sensor"
    image = components["snapshot"]
    assert image["p"] == "image" and image["image_topic"] == "yolo-edge/pi-4/snapshot"
    assert image["content_type"] == "image/jpeg"
    assert components["count_circle"]["unique_id"] == "yolo_edge_pi-4_count_circle"


def test_templates_read_the_agents_own_payloads() -> None:
    components = discovery_payload(DEVICE)["cmps"]
    connectivity = components["connectivity"]["value_template"]
    assert [render(connectivity, s) for s in (b"online", b"offline", b"stopped")] == ["ON", "OFF", "OFF"]
    busy, idle = stats_payload(5), stats_payload(0)
    assert float(render(components["fps"]["value_template"], busy)) == json.loads(busy)["fps"] > 0
    assert render(components["inference_p50"]["value_template"], busy) == "22.0"
    # A stats window without frames has no latency: Home Assistant reads "None" as unknown.
    assert render(components["inference_p50"]["value_template"], idle) == "None"
    present = presence_payload({"circle": 3}, 1700000000.0)
    nobody = presence_payload({}, 1700000000.0)
    assert render(components["count_circle"]["value_template"], present) == "3"
    assert render(components["count_star"]["value_template"], present) == "0"
    assert render(components["count_circle"]["value_template"], nobody) == "0"
    assert render(components["present_circle"]["value_template"], present) == "ON"
    assert render(components["present_star"]["value_template"], present) == "OFF"
    assert render(components["present_circle"]["value_template"], nobody) == "OFF"


@pytest.mark.parametrize("label", ['say "hi"', "back\\slash", "}} {{", "Küche", "traffic light", "it's"])
def test_any_label_makes_a_working_template(label: str) -> None:
    device = DiscoveryDevice("d", "p/d", "m", (label,), "1")
    components = discovery_payload(device)["cmps"]
    count = next(c for k, c in components.items() if k.startswith("count_"))
    present = next(c for k, c in components.items() if k.startswith("present_"))
    assert render(count["value_template"], presence_payload({label: 2}, 0.0)) == "2"
    assert render(present["value_template"], presence_payload({label: 2}, 0.0)) == "ON"
    assert render(present["value_template"], presence_payload({"other": 2}, 0.0)) == "OFF"


def test_labels_that_slug_alike_get_distinct_components() -> None:
    device = DiscoveryDevice("d", "p/d", "m", ("traffic light", "traffic_light", "Traffic-Light"), "1")
    components = discovery_payload(device)["cmps"]
    counts = sorted(k for k in components if k.startswith("count_"))
    assert counts == ["count_traffic_light", "count_traffic_light_2", "count_traffic_light_3"]
    assert all(key.replace("_", "").isalnum() for key in components)


# (configured [homeassistant] classes, [model] classes, names, expected)
INTEREST = [
    ((), (), NAMES, ("circle", "square", "triangle", "star")),
    ((), (), COCO_LIKE, ("label0", "label1", "label2", "label3", "label4")),
    ((), ("label7", "label3"), COCO_LIKE, ("label7", "label3")),
    (("label9",), ("label7", "label3"), COCO_LIKE, ("label9",)),
    (("star", "star"), (), NAMES, ("star",)),
]


@pytest.mark.parametrize(("configured", "class_filter", "names", "expected"), INTEREST)
def test_classes_of_interest(configured, class_filter, names, expected) -> None:
    assert classes_of_interest(names, configured, class_filter) == expected


def test_an_80_class_model_does_not_get_80_sensors() -> None:
    labels = classes_of_interest(COCO_LIKE, (), ())
    device = DiscoveryDevice("d", "p/d", "m", labels, "1")
    assert len(discovery_payload(device)["cmps"]) == 4 + 2 * 5


def test_version_comes_from_the_package() -> None:
    version = package_version()
    assert version and version[0].isdigit()


# -- the re-send when Home Assistant comes back -------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        assert topic == "homeassistant/device/d/config" and payload == b"{}"
        with self.changed:
            self.times.append(time.monotonic())
            self.changed.notify_all()

    def wait(self, count: int, timeout: float) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.times) >= count, timeout), self.times


class Delays(random.Random):
    """The announcer's random source: always `delay` seconds, and a record of the ranges drawn from."""

    def __init__(self, delay: float) -> None:
        super().__init__(0)
        self.delay = delay
        self.drawn: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.drawn.append((a, b))
        return self.delay


def wait_timers_done(announcer: DiscoveryAnnouncer, timeout: float = 5.0) -> None:
    """Wait until none of `announcer`'s re-send timers is alive: each has sent or was cancelled.

    The positive sign that nothing more will be sent, where a sleep would pass on a slow machine
    before a wrong re-send came. A timer leaves threading.enumerate() only after its send returned.
    """
    deadline = time.monotonic() + timeout
    while any(
        isinstance(thread, threading.Timer) and getattr(thread.function, "__self__", None) is announcer
        for thread in threading.enumerate()
    ):
        assert time.monotonic() < deadline, f"a re-send timer still runs after {timeout} s"
        time.sleep(0.01)


def test_announcer_sends_now_and_again_after_online_with_a_random_delay() -> None:
    sent = Sent()
    delays = Delays(0.1)
    announcer = DiscoveryAnnouncer(sent, "homeassistant/device/d/config", b"{}", max_delay_s=0.3, rng=delays)
    try:
        announcer.announce()
        assert len(sent.times) == 1
        asked = time.monotonic()
        announcer.on_ha_status(b"online")
        assert len(sent.times) == 1, "never on paho's thread: later, on a timer"
        sent.wait(2, timeout=5)
        assert delays.drawn == [(0, 0.3)], "a delay drawn from 0..max_delay_s"
        assert sent.times[1] - asked >= delays.delay, "not before the drawn delay"
        for other in (b"offline", b"", b"\xff\xfe"):
            announcer.on_ha_status(other)
        wait_timers_done(announcer)
        assert len(sent.times) == 2, "only `online` asks for discovery again"
        for _ in range(3):  # Home Assistant restarting quickly: one re-send, not three
            announcer.on_ha_status(b"online")
        sent.wait(3, timeout=5)
        wait_timers_done(announcer)
        assert len(sent.times) == 3
    finally:
        announcer.close()


def test_closing_the_announcer_cancels_a_pending_send() -> None:
    sent = Sent()
    announcer = DiscoveryAnnouncer(sent, "homeassistant/device/d/config", b"{}", max_delay_s=0.2, rng=random.Random(2))
    announcer.on_ha_status(b"online")
    announcer.close()
    announcer.on_ha_status(b"online")
    wait_timers_done(announcer)
    assert sent.times == []


def test_zones_get_an_occupancy_sensor_and_a_count_per_label_fed_by_the_zones_topic() -> None:
    device = DiscoveryDevice(
        "pi-4", "yolo-edge/pi-4", "shapes", ("circle",), "1.2.3", zones=(("drive way", ("car", "person")),)
    )
    components = check_discovery(discovery_payload(device), device)
    occupied = components["zone_drive_way_occupied"]
    cars = components["zone_drive_way_count_car"]
    assert occupied["p"] == "binary_sensor" and occupied["device_class"] == "occupancy"
    assert occupied["state_topic"] == cars["state_topic"] == "yolo-edge/pi-4/zones"
    busy = zones_payload({"drive way": {"car": 2, "person": 0}}, 1700000000.0)
    empty = zones_payload({"drive way": {"car": 0, "person": 0}}, 1700000000.0)
    other = zones_payload({"garden": {"dog": 1}}, 1700000000.0)
    assert render(occupied["value_template"], busy) == "ON"
    assert render(occupied["value_template"], empty) == "OFF"
    assert render(occupied["value_template"], other) == "OFF", "a zone missing from the message is empty"
    assert render(cars["value_template"], busy) == "2"
    assert render(components["zone_drive_way_count_person"]["value_template"], busy) == "0"
    assert render(cars["value_template"], other) == "0"


# -- counting lines ----------------------------------------------------------------------------------

LINE_POINTS = {"door": [[0.5, 0.0], [0.5, 1.0]], "Gate-2": [[0.0, 0.6], [1.0, 0.6]]}


def line_device(*lines: str) -> DiscoveryDevice:
    return DiscoveryDevice("pi-4", "yolo-edge/pi-4", "shapes", ("circle",), "1.2.3", lines=lines)


def test_each_line_gets_a_total_increasing_sensor_per_direction_fed_by_the_lines_topic() -> None:
    device = line_device("door", "Gate-2")
    components = check_discovery(discovery_payload(device), device)
    keys = {"line_door_in", "line_door_out", "line_Gate-2_in", "line_Gate-2_out"}
    assert keys <= set(components)
    for key in keys:
        sensor = components[key]
        assert sensor["p"] == "sensor" and sensor["state_class"] == "total_increasing", sensor
        assert sensor["state_topic"] == "yolo-edge/pi-4/lines"
    assert components["line_Gate-2_in"]["unique_id"] == "yolo_edge_pi-4_line_Gate-2_in"
    counted = lines_payload(
        {"door": {"in": {"circle": 2, "star": 1}, "out": {}}, "Gate-2": {"in": {}, "out": {"square": 4}}},
        1700000000.0,
        1700000100.0,
        LINE_POINTS,
    )
    rendered = {key: render(components[key]["value_template"], counted) for key in keys}
    assert rendered == {"line_door_in": "3", "line_door_out": "0", "line_Gate-2_in": "0", "line_Gate-2_out": "4"}
    # After the daily reset every count is back to 0 (a new cycle for total_increasing); a line the message
    # does not hold yet (an agent of before the line was added) reads 0 too.
    reset = lines_payload({"door": {"in": {}, "out": {}}}, 1700086400.0, 1700086400.0, {"door": LINE_POINTS["door"]})
    assert {key: render(components[key]["value_template"], reset) for key in keys} == dict.fromkeys(keys, "0")


def test_lines_whose_names_differ_only_in_case_get_distinct_sensors() -> None:
    components = discovery_payload(line_device("door", "Door"))["cmps"]
    assert {"line_door_in", "line_Door_in"} <= set(components)
    assert components["line_door_in"]["unique_id"] != components["line_Door_in"]["unique_id"]


def test_a_line_taken_out_of_the_config_is_removed_once(tmp_path: Path) -> None:
    record = DiscoveryRecord(tmp_path / "state")

    def start(device: DiscoveryDevice) -> dict[str, Any]:
        """What connect.py does at start: the message with removals, and the record of what it announces."""
        body = discovery_payload(device)
        sent = with_removals(body, record.load())
        record.save(announced(body))
        return sent

    first = start(line_device("door", "gate"))
    assert not [c for c in first["cmps"].values() if set(c) == {"p"}], "a first run removes nothing"
    second = start(line_device("door"))
    check_discovery(second, line_device("door"))
    # Home Assistant removes a component of a device-based message named with its platform alone.
    assert second["cmps"]["line_gate_in"] == second["cmps"]["line_gate_out"] == {"p": "sensor"}
    assert second["cmps"]["line_door_in"] == first["cmps"]["line_door_in"], "the line that stays is unchanged"
    third = start(line_device("door"))
    assert "line_gate_in" not in third["cmps"], "removed once: the next start does not name it again"
    assert third == discovery_payload(line_device("door"))
    back = start(line_device("door", "gate"))
    assert back["cmps"]["line_gate_in"] == first["cmps"]["line_gate_in"], "a line put back is announced again"


def test_an_unreadable_record_removes_nothing_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = DiscoveryRecord(tmp_path)
    for junk in (b"\x00\xff", b"[]", b'{"components": {"line_a_in": 3}}', b'{"components": {"../x": "sensor"}}'):
        record.path.write_bytes(junk)
        caplog.clear()
        assert record.load() == {}, junk
        assert len(caplog.records) == 1 and str(record.path) in caplog.records[0].getMessage(), junk
    assert "Traceback" not in caplog.text
    record.save({"line_a_in": "sensor"})
    assert record.load() == {"line_a_in": "sensor"}


def test_a_record_that_cannot_be_written_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    record = DiscoveryRecord(tmp_path / "file")  # a state directory that is a file: nothing can go under it
    record.save({"line_a_in": "sensor"})
    assert len(caplog.records) == 1 and "not recorded" in caplog.records[0].getMessage()
    assert record.load() == {}
