"""Remote settings: parsing and validation of `set` payloads, and the hand-off to the frame loop.

Pure functions and the CommandInbox only; the agent answering `set` over a real broker is in
tests/agent/control/test_remote_e2e.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from agent.control.commands import MAX_PENDING_CHANGES, CommandInbox
from agent.control.remote_settings import (
    KEYS,
    MAX_PAYLOAD_BYTES,
    RuntimeSettings,
    SettingsChange,
    SettingsRejected,
    accepted_payload,
    parse_settings,
    rejected_payload,
)
from agent.pipeline.postprocess import PostprocessSettings

NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "star"}


def encoded(payload: bytes | str | object) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(payload, bytes):
        return payload
    return (payload if isinstance(payload, str) else json.dumps(payload)).encode()


def parse(payload: bytes | str | object) -> SettingsChange:
    return parse_settings(encoded(payload), NAMES)


def rejection(payload: bytes | str | object) -> SettingsRejected:
    with pytest.raises(SettingsRejected) as caught:
        parse(payload)
    assert "\n" not in str(caught.value)
    return caught.value


# (payload, the change it makes)
ACCEPTED = [
    ({"confidence": 0.5}, {"confidence": 0.5}),
    ({"confidence": 1}, {"confidence": 1.0}),
    ({"iou": 0.7}, {"iou": 0.7}),
    ({"classes": ["circle", "star"]}, {"classes": ("circle", "star")}),
    ({"classes": ["star", "star"]}, {"classes": ("star",)}),
    ({"classes": []}, {"classes": ()}),
    ({"class_confidence": {"square": 0.9}}, {"class_confidence": {"square": 0.9}}),
    ({"class_confidence": {}}, {"class_confidence": {}}),
    ({"max_fps": 0}, {"max_fps": 0.0}),
    ({"max_fps": 0.1}, {"max_fps": 0.1}),
    ({"max_fps": 1000}, {"max_fps": 1000.0}),
    ({"publish_detections": False}, {"publish_detections": False}),
    ({}, {}),
    (
        {"confidence": 0.3, "iou": 0.5, "classes": ["circle"], "max_fps": 5, "publish_detections": True},
        {"confidence": 0.3, "iou": 0.5, "classes": ("circle",), "max_fps": 5.0, "publish_detections": True},
    ),
]


@pytest.mark.parametrize(("payload", "expected"), ACCEPTED)
def test_valid_payloads(payload, expected) -> None:
    change = parse(payload)
    assert dict(change.values) == expected
    assert json.loads(json.dumps(change.as_dict())) == change.as_dict()


# (payload, keys named in the rejection, text the message holds)
REJECTED: list[tuple[object, list[str], str]] = [
    ('{"confidence": ', [], "payload is not valid JSON"),
    ("confidence=0.5", [], "payload is not valid JSON"),
    ("", [], "payload is not valid JSON"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\x81", [], "payload is not UTF-8 text"),
    ("[0.5]", [], "payload must be a JSON object of settings, got list"),
    ('"confidence"', [], "got str"),
    ("null", [], "got NoneType"),
    ("[" * 100_000 + "]" * 100_000, [], "payload is"),  # too big, and too deep for json too
    ("[" * 30_000 + "]" * 30_000, [], "nested too deeply"),
    ('{"confidence": ' + "9" * 5000 + "}", [], "payload is not valid JSON"),  # longer than int() takes
    ({"confidence": "high"}, ["confidence"], 'confidence: "high" is not allowed; expected a number 0 < x <= 1'),
    ({"confidence": 0}, ["confidence"], "confidence: 0 is not allowed"),
    ({"confidence": 1.5}, ["confidence"], "confidence: 1.5 is not allowed"),
    ({"confidence": True}, ["confidence"], "confidence: true is not allowed"),
    ({"confidence": None}, ["confidence"], "confidence: null is not allowed"),
    ('{"confidence": NaN}', ["confidence"], "confidence: NaN is not allowed"),
    ('{"confidence": Infinity}', ["confidence"], "confidence: Infinity is not allowed"),
    ({"iou": [0.5]}, ["iou"], "iou: [0.5] is not allowed"),
    ({"classes": "circle"}, ["classes"], 'classes: "circle" is not allowed; expected a list of labels'),
    ({"classes": ["circle", 3]}, ["classes"], "expected a list of labels"),
    (
        {"classes": ["dog"]},
        ["classes"],
        'expected labels of this model (circle, square, triangle, star); unknown: "dog"',
    ),
    ({"class_confidence": {"square": 2}}, ["class_confidence"], "expected an object of label: number 0 < x <= 1"),
    ({"class_confidence": ["square"]}, ["class_confidence"], 'class_confidence: ["square"] is not allowed'),
    ({"class_confidence": {"cat": 0.5}}, ["class_confidence"], 'unknown: "cat"'),
    ({"max_fps": -1}, ["max_fps"], "max_fps: -1 is not allowed; expected 0 (no limit) or a number 0.1..1000"),
    ({"max_fps": 0.01}, ["max_fps"], "max_fps: 0.01 is not allowed"),
    ({"max_fps": 5000}, ["max_fps"], "max_fps: 5000 is not allowed"),
    ({"publish_detections": "no"}, ["publish_detections"], 'publish_detections: "no" is not allowed; expected true'),
    ({"publish_detections": 0}, ["publish_detections"], "publish_detections: 0 is not allowed"),
    ({"bogus": 1}, ["bogus"], 'unknown key "bogus"; allowed keys: ' + ", ".join(KEYS)),
    ({"Confidence": 0.5}, ["Confidence"], 'unknown key "Confidence"'),
    # Nothing half-applied: one bad key rejects the good ones with it, and every bad key is named.
    ({"confidence": 0.5, "iou": "x"}, ["iou"], 'iou: "x" is not allowed'),
    (
        {"iou": 2, "confidence": 0.5, "nope": 1},
        ["iou", "nope"],
        'iou: 2 is not allowed; expected a number 0 < x <= 1; unknown key "nope"',
    ),
]


@pytest.mark.parametrize(("payload", "keys", "fragment"), REJECTED, ids=[str(i) for i in range(len(REJECTED))])
def test_invalid_payloads_are_rejected_naming_the_key(payload, keys, fragment) -> None:
    rejected = rejection(payload)
    assert rejected.keys == keys
    assert fragment in str(rejected), str(rejected)


def test_payload_size_is_capped_before_it_is_parsed() -> None:
    just_in = json.dumps({"classes": ["circle"] * ((MAX_PAYLOAD_BYTES - 20) // 10)})
    assert len(just_in) <= MAX_PAYLOAD_BYTES
    assert parse(just_in).values["classes"] == ("circle",)
    huge = b'{"confidence": 0.5, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    rejected = rejection(huge)
    assert str(rejected) == f"payload is {len(huge)} bytes; at most {MAX_PAYLOAD_BYTES} allowed"
    assert rejected.keys == []


def test_replies_stay_short_whatever_the_payload() -> None:
    many = {f"k{i}": 0 for i in range(5000)}
    rejected = rejection(many)
    assert len(rejected.keys) == 10 and str(rejected).endswith("; and 4990 more")
    assert len(str(rejected)) < 2000
    long_value = rejection({"confidence": "y" * 50_000})
    assert len(str(long_value)) < 200
    long_key = rejection({"k" * 50_000: 1})
    assert len(long_key.keys[0]) <= 60 and len(str(long_key)) < 400


def test_runtime_settings_change_and_map_to_the_detector() -> None:
    start = RuntimeSettings(0.25, 0.45, (), {})
    changed = start.changed(
        parse({"confidence": 0.6, "classes": ["square", "star"], "class_confidence": {"star": 0.8}})
    )
    assert changed.as_dict() == {
        "confidence": 0.6,
        "iou": 0.45,
        "classes": ["square", "star"],
        "class_confidence": {"star": 0.8},
        "max_fps": 0.0,
        "publish_detections": True,
    }
    assert start.confidence == 0.25, "settings are values: a change makes new ones"
    assert changed.postprocess(NAMES, max_detections=50) == PostprocessSettings(
        confidence=0.6, iou=0.45, classes=frozenset({1, 3}), class_confidence={3: 0.8}, max_detections=50
    )
    assert start.postprocess(NAMES, 300).classes is None, "no class filter keeps every class"
    # A class filter replaces the old one, and so does a class_confidence table.
    assert changed.changed(parse({"classes": []})).classes == ()
    assert changed.changed(parse({"class_confidence": {}})).class_confidence == {}


def test_result_payloads() -> None:
    change = parse({"confidence": 0.7})
    settings = RuntimeSettings().changed(change)
    ok = accepted_payload(1700000000.12345, change, settings)
    assert ok == {"ok": True, "ts": 1700000000.123, "applied": {"confidence": 0.7}, "settings": settings.as_dict()}
    bad = rejected_payload(1700000000.0, rejection({"iou": "x", "what": 1}))
    assert bad["ok"] is False and bad["keys"] == ["iou", "what"] and "iou:" in bad["error"]
    assert json.loads(json.dumps(ok)) == ok and json.loads(json.dumps(bad)) == bad


# -- the hand-off from paho's thread to the frame loop -----------------------------------------------


class Replies:
    """Collects what the inbox would publish on set/result."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []

    def __call__(self, payload: bytes) -> None:
        self.payloads.append(json.loads(payload))


def test_inbox_queues_valid_changes_and_answers_bad_ones_at_once() -> None:
    replies = Replies()
    inbox = CommandInbox(NAMES, replies)
    inbox.on_set(b'{"confidence": 0.5}')
    inbox.on_set(b"\x00\x01junk")
    inbox.on_set(b'{"classes": ["dog"]}')
    inbox.on_set(b'{"iou": 0.6}')
    assert [dict(c.values) for c in inbox.take_changes()] == [{"confidence": 0.5}, {"iou": 0.6}]
    assert inbox.take_changes() == []
    assert [(r["ok"], r["keys"]) for r in replies.payloads] == [(False, []), (False, ["classes"])]
    assert "not valid JSON" in replies.payloads[0]["error"] or "UTF-8" in replies.payloads[0]["error"]


def test_inbox_refuses_a_flood_instead_of_queueing_it() -> None:
    replies = Replies()
    inbox = CommandInbox(NAMES, replies)
    for _ in range(MAX_PENDING_CHANGES + 3):
        inbox.on_set(b'{"confidence": 0.5}')
    assert len(inbox.take_changes()) == MAX_PENDING_CHANGES
    assert len(replies.payloads) == 3 and all("waiting for a frame" in r["error"] for r in replies.payloads)
    inbox.on_set(b'{"confidence": 0.5}')
    assert len(inbox.take_changes()) == 1, "taking the queue makes room again"


def test_inbox_snapshot_requests_coalesce() -> None:
    inbox = CommandInbox(NAMES, Replies())
    assert not inbox.take_snapshot_request()
    for _ in range(3):
        inbox.on_snapshot_request(b"")
    assert inbox.take_snapshot_request()
    assert not inbox.take_snapshot_request()


def test_inbox_from_many_threads_loses_nothing() -> None:
    replies = Replies()
    inbox = CommandInbox(NAMES, replies)
    taken: list[SettingsChange] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            taken.extend(inbox.take_changes())
            done.wait(0.001)
        taken.extend(inbox.take_changes())

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [
        threading.Thread(target=lambda: [inbox.on_set(b'{"max_fps": 5}') for _ in range(50)]) for _ in range(4)
    ]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(10)
    done.set()
    consumer.join(10)
    assert len(taken) + len(replies.payloads) == 200, "every change is either queued or refused with a reply"


def test_inbox_does_not_see_later_changes_to_the_names_it_was_given() -> None:
    names = dict(NAMES)
    inbox = CommandInbox(names, Replies())
    names[4] = "dog"
    inbox.on_set(b'{"classes": ["dog"]}')
    assert inbox.take_changes() == []


# -- commands through MqttPublisher.subscribe, against a real broker ----------------------------------


def test_command_handlers_survive_their_own_errors_and_broker_restarts(tmp_path, broker) -> None:
    from paho.mqtt import publish

    from agent.transport.connection import MqttSettings
    from agent.transport.mqtt import MqttPublisher
    from agent.transport.outbox import Outbox

    received: list[bytes] = []
    got = threading.Condition()

    def handler(payload: bytes) -> None:
        with got:
            received.append(payload)
            got.notify_all()
        if payload == b"boom":
            raise RuntimeError("a bug in a handler")

    def send(payload: bytes) -> None:
        publish.single("yolo-edge/cmd/set", payload, qos=1, hostname=broker.host, port=broker.port)

    def wait_received(predicate: Callable[[list[bytes]], bool], timeout: float = 5.0) -> None:
        with got:
            assert got.wait_for(lambda: predicate(received), timeout), received

    def subscribed() -> None:
        """Ping until the handler hears it: the publisher's SUBSCRIBE follows its CONNACK by a moment."""
        deadline = time.monotonic() + 10
        pings = received.count(b"ping")
        while True:
            send(b"ping")
            with got:
                if got.wait_for(lambda: received.count(b"ping") > pings, 0.3):
                    return
            assert time.monotonic() < deadline, "never subscribed"

    settings = MqttSettings(broker.host, broker.port, "yolo-edge/cmd", "cmd", reconnect_max_s=1.0)
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        publisher = MqttPublisher(settings, outbox)
        publisher.subscribe("set", handler)
        publisher.start()
        try:
            subscribed()
            send(b"boom")
            send(b"after")
            wait_received(lambda r: b"after" in r)  # paho's network thread outlived the handler's error
            broker.stop()
            broker.start()
            subscribed()  # a clean session: subscribed again on the reconnect
            send(b"again")
            wait_received(lambda r: b"again" in r)
            assert [p for p in received if p != b"ping"] == [b"boom", b"after", b"again"]
            assert publisher.health().reconnects >= 1
        finally:
            publisher.close()


# -- request ids ----------------------------------------------------------------------------------


def test_a_request_id_is_taken_out_of_the_settings_and_comes_back_in_the_answer() -> None:
    change = parse({"request_id": "op-1", "confidence": 0.4})
    assert change.request_id == "op-1" and dict(change.values) == {"confidence": 0.4}
    answer = accepted_payload(1.0, change, RuntimeSettings().changed(change))
    assert answer["request_id"] == "op-1" and answer["applied"] == {"confidence": 0.4}
    assert "request_id" not in accepted_payload(1.0, parse({"iou": 0.5}), RuntimeSettings())


@pytest.mark.parametrize("bad", ["", "x" * 65, 7, None, ["a"], "line\nbreak"])
def test_a_bad_request_id_rejects_the_whole_payload(bad: object) -> None:
    with pytest.raises(SettingsRejected) as caught:
        parse({"request_id": bad, "confidence": 0.4})
    assert caught.value.keys == ["request_id"] and caught.value.request_id is None
    assert "request_id" not in rejected_payload(1.0, caught.value)


def test_a_rejection_carries_the_valid_request_id_of_its_payload() -> None:
    with pytest.raises(SettingsRejected) as caught:
        parse({"request_id": "op-2", "iou": 3})
    assert rejected_payload(1.0, caught.value)["request_id"] == "op-2"
