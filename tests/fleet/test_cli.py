"""`yolo-edge-agent fleet`: parsing and the table on literal payloads, then list, set and deploy over a real broker.

Devices are played by small paho clients that answer `set` with the agent's own reply functions
(agent/control/remote_settings.py) and `deploy` with scripted `deploy/state` messages; the last test has the
real agent answer. Waits are short and bounded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.cli import main
from agent.control.remote_settings import (
    RuntimeSettings,
    SettingsChange,
    SettingsRejected,
    accepted_payload,
    parse_settings,
    rejected_payload,
)
from agent.transport.operator import Received
from fleet.view import (
    HEADERS,
    DeployState,
    DeviceView,
    Outcome,
    StatsSummary,
    answers_request,
    device_json,
    devices_from,
    devices_table,
    format_age,
    outcomes_table,
    parse_deploy_state,
    parse_set_result,
    parse_stats,
    parse_status,
    split_topic,
)
from tests.agent.agent_process import AgentProcess, agent_env, broker_args
from tests.broker import Broker, free_port

PREFIX = "yolo-edge"
NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "star"}
SHA_OLD, SHA_NEW = "a" * 64, "b" * 64
FLEET = (sys.executable, "-m", "agent.cli", "fleet")
ROOT = Path(__file__).resolve().parents[2]


def stats_payload(ts: float, fps: float = 7.94, p50: float = 41.23, pending: int = 0, **extra: Any) -> bytes:
    """A `stats` message shaped like the agent's (agent/runtime/messages.py): the fields the table reads, more."""
    body = {
        "ts": ts,
        "fps": fps,
        "window_s": 10.0,
        "latency_ms": {"inference": {"p50": p50, "p95": p50 * 1.2, "max": p50 * 2}, "total": {"p50": p50 + 9}},
        "frames": {"processed": 100, "dropped": 0, "stale": 0},
        "rss_mb": 180.2,
        "uptime_s": 60.0,
        "model": {"name": "shapes", "precision": "int8", "sha256": SHA_OLD},
        "mqtt": {"connected": True, "outbox_pending": pending, "outbox_dropped": 0, "reconnects": 0},
        **extra,
    }
    return json.dumps(body).encode()


def deploy_payload(state: str, sha256: str = SHA_NEW, reason: str | None = None) -> bytes:
    """A `deploy/state` message: {state, ts, sha256, url, reason?} as the agent publishes it."""
    body: dict[str, Any] = {"state": state, "ts": time.time(), "sha256": sha256, "url": "https://example.org/b.tgz"}
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body).encode()


def received(topic: str, payload: bytes | str, retained: bool = True, at: float = 0.0) -> Received:
    return Received(topic, payload.encode() if isinstance(payload, str) else payload, retained, at)


# -- pure parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("yolo-edge/pi/status", ("pi", "status")),
        ("yolo-edge/pi/deploy/state", ("pi", "deploy/state")),
        ("yolo-edge/pi", None),
        ("yolo-edge//status", None),
        ("other/pi/status", None),
        ("yolo-edgeX/pi/status", None),
    ],
)
def test_split_topic(topic: str, expected: tuple[str, str] | None) -> None:
    assert split_topic(topic, PREFIX) == expected


def test_split_topic_with_a_prefix_of_several_levels() -> None:
    assert split_topic("site/a/yolo/pi/stats", "site/a/yolo") == ("pi", "stats")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"online", "online"), (b"offline", "offline"), (b"stopped", "stopped"), (b"up", '"up"'), (b"\xff", '"\\ufffd"')],
)
def test_status(payload: bytes, expected: str) -> None:
    assert parse_status(payload) == expected


def test_stats_fields() -> None:
    stats = parse_stats(stats_payload(1000.0, pending=3, cpu_temp_c=61.5))
    assert stats == StatsSummary(1000.0, 7.94, 41.23, "shapes", "int8", SHA_OLD, 3, 61.5)


@pytest.mark.parametrize("payload", [b"", b"junk", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_stats_that_are_not_an_object(payload: bytes) -> None:
    assert parse_stats(payload) is None


def test_stats_with_missing_or_wrong_fields_are_unknown_not_errors() -> None:
    body = {"ts": "soon", "fps": True, "latency_ms": {"inference": []}, "model": "x", "mqtt": {"outbox_pending": 2.0}}
    stats = parse_stats(json.dumps(body).encode())
    assert stats == StatsSummary(None, None, None, None, None, None, 2, None)
    huge = {"ts": 10**400, "fps": -(10**400), "cpu_temp_c": 1e400}  # valid JSON, beyond a float (OverflowError)
    assert parse_stats(json.dumps(huge).encode()) == StatsSummary()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (deploy_payload("downloading"), DeployState("downloading", None, SHA_NEW)),
        (deploy_payload("failed", reason="sha256 mismatch"), DeployState("failed", "sha256 mismatch", SHA_NEW)),
        (
            b'{"state": "rolled_back", "error": "first inference failed"}',
            DeployState("rolled_back", "first inference failed"),
        ),
        (b"active", DeployState("active")),
        (b'{"status": "active"}', None),
        (b"<html>", None),
        (b"", None),
    ],
)
def test_deploy_state(payload: bytes, expected: DeployState | None) -> None:
    state = parse_deploy_state(payload)
    if expected is None:
        assert state is None
    else:
        assert state is not None and (state.state, state.reason, state.sha256) == (
            expected.state,
            expected.reason,
            expected.sha256,
        )
        assert state.done == (expected.state in ("active", "failed", "rolled_back"))


def test_set_result_from_the_agents_own_replies() -> None:
    change = parse_settings(b'{"confidence": 0.5}', NAMES)
    accepted = json.dumps(accepted_payload(1.0, change, RuntimeSettings().changed(change))).encode()
    assert parse_set_result(accepted) == Outcome("", True, "ok", 'applied {"confidence":0.5}')
    with pytest.raises(SettingsRejected) as caught:
        parse_settings(b'{"iou": "x"}', NAMES)
    rejected = json.dumps(rejected_payload(1.0, caught.value)).encode()
    outcome = parse_set_result(rejected)
    assert outcome is not None and not outcome.ok and outcome.state == "rejected"
    assert outcome.detail.startswith("iou: ")
    assert parse_set_result(b"junk") is None
    assert parse_set_result(b'{"ok": "yes"}') is None


def test_a_set_result_answers_only_the_change_that_was_sent() -> None:
    change = SettingsChange({"confidence": 0.5})
    mine = json.dumps(accepted_payload(1.0, change, RuntimeSettings())).encode()
    other = json.dumps(accepted_payload(1.0, SettingsChange({"iou": 0.5}), RuntimeSettings())).encode()
    keys = frozenset({"confidence"})
    # From an agent before request ids: told apart by the keys applied.
    assert answers_request(mine, "fleet-1", keys)
    assert not answers_request(other, "fleet-1", keys), "another operator's change"
    assert answers_request(b'{"ok": false, "error": "x", "keys": []}', "fleet-1", keys)


def test_a_set_result_with_a_request_id_answers_only_that_request() -> None:
    keys = frozenset({"confidence"})
    mine = json.dumps(accepted_payload(1.0, SettingsChange({"confidence": 0.5}, "fleet-1"), RuntimeSettings()))
    theirs = json.dumps(accepted_payload(1.0, SettingsChange({"confidence": 0.5}, "ui-9"), RuntimeSettings()))
    assert answers_request(mine.encode(), "fleet-1", keys)
    assert not answers_request(theirs.encode(), "fleet-1", keys), "the same change, someone else's"
    assert not answers_request(b'{"ok": false, "error": "x", "keys": [], "request_id": "ui-9"}', "fleet-1", keys)


def test_devices_from_retained_messages() -> None:
    messages = [
        received("yolo-edge/cam-b/status", "online"),
        received("yolo-edge/cam-a/status", "online"),
        received("yolo-edge/cam-a/stats", stats_payload(100.0)),
        received("yolo-edge/cam-a/settings", '{"confidence": 0.25}'),
        received("yolo-edge/cam-b/deploy/state", deploy_payload("active")),
        received("yolo-edge/cam-b/status", "offline", retained=False),  # the last message per topic wins
        received("yolo-edge/cam-c/stats", stats_payload(100.0)),
        received("yolo-edge/cam-c/stats", b""),  # cleared: cam-c is gone
        received("yolo-edge/cam-d/detections", "{}"),  # not a topic the list reads
        received("homeassistant/device/cam-a/config", "{}"),
    ]
    views = devices_from(messages, PREFIX)
    assert [v.device for v in views] == ["cam-a", "cam-b"]
    cam_a, cam_b = views
    assert cam_a.status == "online" and cam_a.stats is not None and cam_a.stats.fps == 7.94
    assert cam_a.settings == {"confidence": 0.25} and cam_a.deploy is None
    assert cam_b.status == "offline" and cam_b.stats is None
    assert cam_b.deploy is not None and cam_b.deploy.state == "active"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-3.0, "0s"), (0.4, "0s"), (12.2, "12s"), (89, "89s"), (300, "5m"), (7200, "2h"), (4 * 86400, "4d")],
)
def test_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def table_views(now: float) -> list[DeviceView]:
    return devices_from(
        [
            received("yolo-edge/cam-a/status", "online"),
            received("yolo-edge/cam-a/stats", stats_payload(now - 3.2, pending=12)),
            received("yolo-edge/cam-a/deploy/state", deploy_payload("active")),
            received("yolo-edge/cam-b/status", "offline"),
            received("yolo-edge/cam-b/stats", stats_payload(now - 7200, fps=2.0, p50=180.0)),
            received("yolo-edge/cam-b/deploy/state", deploy_payload("rolled_back", reason="no boxes")),
            received("yolo-edge/pi5-garage/status", "stopped"),
        ],
        PREFIX,
    )


def test_table() -> None:
    now = 10_000.0
    assert devices_table(table_views(now), now).splitlines() == [
        "DEVICE      STATUS   FPS  INFER P50  MODEL   PRECISION  OUTBOX  STATS AGE  DEPLOY",
        "cam-a       online   7.9  41.2 ms    shapes  int8       12      3s         active",
        "cam-b       offline  2.0  180.0 ms   shapes  int8       0       2h         rolled_back: no boxes",
        "pi5-garage  stopped  -    -          -       -          -       -          -",
    ]


# What a device sent, with what would move the cursor, clear the screen, set the title or reverse the text.
EVIL_MODEL, EVIL_PRECISION = "\x1b[2J\x1b[Hshapes", "int8\x1b[1A\x1b[2K"
EVIL_REASON = "\x1b]0;pwned\x07bad\x9b2K\u202etxt.exe\x7f"
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\x7f")


def evil_messages(now: float) -> list[tuple[str, bytes]]:
    model = {"name": EVIL_MODEL, "precision": EVIL_PRECISION, "sha256": SHA_OLD}
    return [
        ("yolo-edge/cam-evil/status", b"online"),
        ("yolo-edge/cam-evil/stats", stats_payload(now, model=model)),
        ("yolo-edge/cam-evil/deploy/state", deploy_payload("failed", reason=EVIL_REASON)),
        ("yolo-edge/cam\u202eb/status", b"online"),  # a device id reversing the rest of its row
        ("yolo-edge/cam-good/status", b"online"),
    ]


def test_table_cells_from_the_network_are_escaped() -> None:
    views = devices_from([received(topic, payload) for topic, payload in evil_messages(0.0)], PREFIX)
    table = devices_table(views, 0.0)
    assert not [char for char in UNSAFE if char in table], table
    header, evil, good, reversed_id = table.splitlines()
    model, precision = "\\x1b[2J\\x1b[Hshapes", "int8\\x1b[1A\\x1b[2K"
    assert evil.split()[:7] == ["cam-evil", "online", "7.9", "41.2", "ms", model, precision]
    assert evil.endswith("failed: \\x1b]0;pwned\\x07bad\\x9b2K\\u202etxt.exe\\x7f")
    assert good.split() == ["cam-good", "online", *"-" * 7]
    assert reversed_id.split()[:2] == ["cam\\u202eb", "online"]
    status = header.index("STATUS")
    assert [line[status:].split()[0] for line in (evil, good, reversed_id)] == ["online"] * 3, "columns stay aligned"


def test_table_cells_from_the_network_are_shortened() -> None:
    views = devices_from([received("yolo-edge/x/deploy/state", deploy_payload("failed", reason="r" * 500))], PREFIX)
    line = devices_table(views, 0.0).splitlines()[1]
    assert len(line) < 120 and line.endswith("...")


def test_device_json() -> None:
    now = 10_000.0
    cam_a, cam_b, garage = (device_json(view, now) for view in table_views(now))
    assert cam_a["status"] == "online" and cam_a["fps"] == 7.94 and cam_a["outbox_pending"] == 12
    assert cam_a["model"] == {"name": "shapes", "precision": "int8", "sha256": SHA_OLD}
    assert cam_a["stats_age_s"] == 3.2
    assert cam_b["deploy"] == {"state": "rolled_back", "reason": "no boxes", "sha256": SHA_NEW}
    assert garage["fps"] is None and garage["model"] is None and garage["deploy"] is None
    json.dumps([cam_a, cam_b, garage])  # plain JSON types only


def test_outcomes_table() -> None:
    table = outcomes_table([Outcome("cam-a", True, "ok", "applied {}"), Outcome("b", False, "timeout", "no answer")])
    assert table.splitlines() == [
        "DEVICE  RESULT   DETAIL",
        "cam-a   ok       applied {}",
        "b       timeout  no answer",
    ]


# -- usage errors: one line, exit code 2, before any connection ---------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "--json", "{}"], "name the devices, or give --all"),
        (["set", "cam-a", "--all", "--json", "{}"], "name the devices, or give --all"),
        (["set", "cam-a", "--json", "{confidence: 1}"], "--json is not valid JSON"),
        (["set", "cam-a", "--json", "[1]"], "--json must be a JSON object of settings, got list"),
        (["set", "cam/a", "--json", "{}"], "device 'cam/a' is not a device id"),
        (["set", "cam-a", "--json", "{}", "--timeout", "0"], "--timeout 0 is not allowed"),
        (["deploy", "cam-a", "--url", "file:///b.tgz", "--sha256", SHA_NEW], "is not an https:// or http:// URL"),
        (["deploy", "cam-a", "--url", "https://x/b.tgz", "--sha256", "abc"], "--sha256 'abc' is not 64 hex digits"),
        (["--wait", "-1"], "--wait -1 is not allowed"),
        (["list", "--port", "0"], "config error: mqtt.port (from the command line): 0 is not allowed"),
        (["--password-file", "/nonexistent/pw", "--username", "u"], "mqtt.password_file (from the command line)"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_refused_url_is_shown_without_its_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    url = "ftp://op:s3cret-pw@files.lan/b.tgz?X-Amz-Signature=sig-value"
    assert main(["fleet", "deploy", "cam-a", "--url", url, "--sha256", SHA_NEW]) == 2
    err = capsys.readouterr().err
    assert "--url 'ftp://files.lan/b.tgz' is not an https:// or http:// URL" in err
    assert "s3cret-pw" not in err and "sig-value" not in err


def test_no_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["fleet", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yolo-edge-agent fleet: broker error: cannot connect to 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_a_broker_that_never_answers_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("fleet.cli.CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts the TCP connection, never sends a CONNACK
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert main(["fleet", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"yolo-edge-agent fleet: broker error: 127.0.0.1:{port} did not accept the connection within 0.5 s\n"


# -- over a real broker -------------------------------------------------------------------------------------


def retain(broker: Broker, topic: str, payload: bytes | str) -> None:
    """Publish a retained message as a device would, and return once the broker has it."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


class FakeDevice:
    """One device's side of `set` (answered with the agent's own reply functions) and `deploy` (scripted states).

    deploy_states: (state, reason) published on `deploy/state` in order when a deploy arrives; None: no answer.
    """

    def __init__(
        self,
        broker: Broker,
        device: str,
        answer_set: bool = True,
        deploy_states: list[tuple[str, str | None]] | None = None,
    ) -> None:
        self.device = device
        self.topics = f"{PREFIX}/{device}"
        self.answer_set = answer_set
        self.deploy_states = deploy_states
        self.settings = RuntimeSettings()
        self.commands: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fake-{device}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(
            [(f"{self.topics}/set", 1), (f"{self.topics}/deploy", 1)]
        )
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), f"{device} did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        command = message.topic.rsplit("/", 1)[1]
        self.commands.append((command, bytes(message.payload)))
        if command == "set" and self.answer_set:
            try:
                change = parse_settings(message.payload, NAMES)
            except SettingsRejected as rejected:
                reply = rejected_payload(time.time(), rejected)
            else:
                self.settings = self.settings.changed(change)
                reply = accepted_payload(time.time(), change, self.settings)
            client.publish(f"{self.topics}/set/result", json.dumps(reply), qos=0)
        elif command == "deploy" and self.deploy_states is not None:
            sha256 = json.loads(message.payload)["sha256"]
            for state, reason in self.deploy_states:
                client.publish(f"{self.topics}/deploy/state", deploy_payload(state, sha256, reason), qos=1, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fakes(broker: Broker) -> Iterator[list[FakeDevice]]:
    started: list[FakeDevice] = []
    yield started
    for fake in started:
        fake.close()


def connection(broker: Broker) -> list[str]:
    return ["--host", broker.host, "--port", str(broker.port)]


@pytest.mark.parametrize(
    ("command", "prog"),
    [((sys.executable, "-m", "fleet.cli"), "yolo-edge-fleet"), (FLEET, "yolo-edge-agent fleet")],
    ids=["yolo-edge-fleet", "alias"],
)
def test_the_command_and_its_alias_answer_alike_under_their_own_names(command: tuple[str, ...], prog: str) -> None:
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert helped.returncode == 0 and f"usage: {prog}" in helped.stdout, helped.stderr
    assert all(action in helped.stdout for action in ("list", "set", "deploy")), helped.stdout
    port = free_port()  # nothing listens there
    failed = subprocess.run(
        [*command, "--host", "127.0.0.1", "--port", str(port), "list", "--wait", "0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"{prog}: broker error: cannot connect to 127.0.0.1:{port}"), failed.stderr
    assert failed.stderr.count("\n") == 1, failed.stderr


def run_fleet(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`yolo-edge-agent fleet ARGS` as a user runs it (python -m agent.cli, like the agent's own tests)."""
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_list_shows_what_devices_retained(broker: Broker) -> None:
    now = time.time()
    retain(broker, "yolo-edge/cam-a/status", "online")
    retain(broker, "yolo-edge/cam-a/stats", stats_payload(now - 100, pending=4))
    retain(broker, "yolo-edge/cam-a/settings", '{"confidence": 0.4}')
    retain(broker, "yolo-edge/cam-b/status", "offline")
    retain(broker, "yolo-edge/cam-b/stats", stats_payload(now - 400, fps=3.0, p50=95.5))
    retain(broker, "yolo-edge/cam-b/deploy/state", deploy_payload("failed", reason="sha256 mismatch"))
    retain(broker, "other-prefix/cam-c/status", "online")
    started = time.monotonic()
    result = run_fleet(["list", *connection(broker), "--wait", "0.5"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == " ".join(HEADERS).split()
    assert lines[1].split() == ["cam-a", "online", "7.9", "41.2", "ms", "shapes", "int8", "4", "2m", "-"]
    assert lines[2].split()[:8] == ["cam-b", "offline", "3.0", "95.5", "ms", "shapes", "int8", "0"]
    assert lines[2].split()[8:] == ["7m", "failed:", "sha256", "mismatch"]
    assert len(lines) == 3, "other prefixes are not listed"
    assert time.monotonic() - started < 15


def test_list_as_json_with_another_prefix(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    retain(broker, "site-2/cam-c/status", "stopped")
    retain(broker, "site-2/cam-c/stats", stats_payload(time.time()))
    assert main(["fleet", *connection(broker), "--prefix", "site-2", "--wait", "0.3", "--format", "json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert [(d["device"], d["status"], d["fps"]) for d in devices] == [("cam-c", "stopped", 7.94)]


def test_list_prints_nothing_a_device_sent_raw(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    for topic, payload in evil_messages(time.time()):
        retain(broker, topic, payload)
    result = run_fleet(["list", *connection(broker), "--wait", "0.5"])
    assert result.returncode == 0, result.stderr
    assert not [char for char in UNSAFE if char in result.stdout + result.stderr], result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["DEVICE", "cam-evil", "cam-good", "cam\\u202eb"]
    assert "\\x1b[2J\\x1b[Hshapes" in result.stdout and "txt.exe" in result.stdout
    assert main(["fleet", "list", *connection(broker), "--wait", "0.3", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert not [char for char in UNSAFE if char in out]
    models = {row["device"]: row["model"] for row in json.loads(out)}
    assert models["cam-evil"]["name"] == EVIL_MODEL, "JSON carries the text as sent, escaped by JSON itself"


def test_list_with_no_devices(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "list", *connection(broker), "--wait", "0.2"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no devices under yolo-edge/" in err


def test_set_reports_each_device_and_times_out_on_the_silent_one(broker: Broker, fakes: list[FakeDevice]) -> None:
    fakes += [FakeDevice(broker, "cam-a"), FakeDevice(broker, "cam-b", answer_set=False)]
    retain(broker, "yolo-edge/cam-a/status", "online")
    retain(broker, "yolo-edge/cam-b/status", "online")
    started = time.monotonic()
    result = run_fleet(
        ["set", "cam-a", "cam-b", "--json", '{"confidence": 0.5}', "--timeout", "2", *connection(broker)]
    )
    assert result.returncode == 1, result.stderr
    rows = [line.split(maxsplit=2) for line in result.stdout.splitlines()]
    assert rows == [
        ["DEVICE", "RESULT", "DETAIL"],
        ["cam-a", "ok", 'applied {"confidence":0.5}'],
        ["cam-b", "timeout", "no answer within 2 s (status online)"],
    ]
    assert "cam-a: ok" in result.stderr, "progress as answers come"
    assert [c for c, _ in fakes[0].commands] == ["set"] and fakes[0].settings.confidence == 0.5
    [(command, sent)] = fakes[1].commands  # sent, just never answered
    body = json.loads(sent)
    assert command == "set" and body.pop("request_id").startswith("fleet-") and body == {"confidence": 0.5}
    assert time.monotonic() - started < 20


def test_set_all_goes_to_online_devices_and_reports_rejections(
    broker: Broker, fakes: list[FakeDevice], capsys: pytest.CaptureFixture[str]
) -> None:
    fakes += [FakeDevice(broker, "cam-a"), FakeDevice(broker, "cam-b"), FakeDevice(broker, "cam-off")]
    for device, status in (("cam-a", "online"), ("cam-b", "online"), ("cam-off", "offline")):
        retain(broker, f"yolo-edge/{device}/status", status)
    args = [*connection(broker), "--wait", "0.3", "--timeout", "3", "--format", "json"]
    assert main(["fleet", "set", "--all", "--json", '{"iou": 2}', *args]) == 1
    outcomes = json.loads(capsys.readouterr().out)
    assert [(o["device"], o["ok"], o["state"]) for o in outcomes] == [
        ("cam-a", False, "rejected"),
        ("cam-b", False, "rejected"),
    ]
    assert outcomes[0]["detail"].startswith("iou: 2 is not allowed")
    assert fakes[2].commands == [], "an offline device is not sent anything"
    assert main(["fleet", "set", "--all", "--json", '{"max_fps": 2, "classes": ["star"]}', *args]) == 0
    assert all(o["ok"] for o in json.loads(capsys.readouterr().out))
    assert fakes[0].settings.max_fps == 2.0 and fakes[1].settings.classes == ("star",)


def test_deploy_follows_each_device_to_its_outcome(
    broker: Broker, fakes: list[FakeDevice], capsys: pytest.CaptureFixture[str]
) -> None:
    fakes += [
        FakeDevice(broker, "cam-a", deploy_states=[("downloading", None), ("verifying", None), ("active", None)]),
        FakeDevice(
            broker, "cam-b", deploy_states=[("downloading", None), ("rolled_back", "first inference\x1b[2Kfailed")]
        ),
        FakeDevice(broker, "cam-c", deploy_states=[("downloading", None)]),  # stalls
    ]
    # From an earlier deploy: retained, so not taken for this one's outcome.
    retain(broker, "yolo-edge/cam-c/deploy/state", deploy_payload("active", SHA_OLD))
    url = "https://bundles.example.org/shapes.tar.gz"
    args = ["cam-a", "cam-b", "cam-c", "--url", url, "--sha256", SHA_NEW.upper(), "--timeout", "2"]
    code = main(["fleet", "deploy", *args, *connection(broker)])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split(maxsplit=2) for line in out.splitlines()] == [
        ["DEVICE", "RESULT", "DETAIL"],
        ["cam-a", "active"],
        ["cam-b", "rolled_back", "first inference\\x1b[2Kfailed"],
        ["cam-c", "timeout", "still downloading after 2 s"],
    ]
    assert "cam-b: rolled_back: first inference\\x1b[2Kfailed" in err.splitlines() and "\x1b" not in out + err
    assert [line for line in err.splitlines() if line.startswith("cam-a")] == [
        "cam-a: deploy sent",
        "cam-a: downloading",
        "cam-a: verifying",
        "cam-a: active",
    ]
    sent = json.loads(fakes[0].commands[0][1])
    assert sent.pop("request_id").startswith("fleet-"), "answers are matched by it"
    assert sent == {"url": url, "sha256": SHA_NEW}, "the sha256 goes out in lowercase, as the agent expects it"


def test_deploy_all_ok(broker: Broker, fakes: list[FakeDevice], capsys: pytest.CaptureFixture[str]) -> None:
    fakes.append(FakeDevice(broker, "cam-a", deploy_states=[("downloading", None), ("active", None)]))
    retain(broker, "yolo-edge/cam-a/status", "online")
    args = [
        "--url",
        "http://10.0.0.2/b.tgz",
        "--sha256",
        SHA_NEW,
        "--wait",
        "0.3",
        "--timeout",
        "3",
        "--format",
        "json",
    ]
    assert main(["fleet", "deploy", "--all", *args, *connection(broker)]) == 0
    assert json.loads(capsys.readouterr().out) == [{"device": "cam-a", "ok": True, "state": "active", "detail": ""}]


def test_a_broker_lost_while_waiting_is_one_line(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    stopper = threading.Timer(0.5, broker.stop)
    stopper.start()
    try:
        assert main(["fleet", "set", "cam-a", "--json", "{}", "--timeout", "10", *connection(broker)]) == 2
    finally:
        stopper.join()
    err = capsys.readouterr().err
    assert err == f"yolo-edge-agent fleet: broker error: lost the connection to {broker.host}:{broker.port}\n"


# -- with the real agent ---------------------------------------------------------------------------------


def test_fleet_with_the_real_agent(
    broker: Broker, tmp_path: Path, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> None:
    """The agent's own retained messages make its row, and it answers a `fleet set`."""
    device = "fleet-real"
    args = ["run", "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx)]
    env = agent_env(tmp_path / "state", source_fps=8, stats_interval=1)
    with AgentProcess([*args, *broker_args(broker.host, broker.port, device)], env, tmp_path) as agent:
        deadline = time.monotonic() + 90
        while True:
            listed = run_fleet(["list", *connection(broker), "--wait", "0.5", "--format", "json"])
            rows = [d for d in json.loads(listed.stdout or "[]") if d["device"] == device]
            if rows and rows[0]["fps"] is not None and rows[0]["fps"] > 0:
                break
            assert agent.running, agent.describe()
            assert time.monotonic() < deadline, f"no stats from the agent: {listed.stdout} {agent.describe()}"
            time.sleep(1.0)
        row = rows[0]
        assert row["status"] == "online" and row["model"]["name"] == fixture_onnx.stem
        assert row["settings"]["confidence"] == 0.25 and row["outbox_pending"] == 0
        changed = run_fleet(["set", device, "--json", '{"confidence": 0.6}', "--timeout", "10", *connection(broker)])
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert changed.stdout.splitlines()[1].split(maxsplit=2) == [device, "ok", 'applied {"confidence":0.6}']
        agent.stop()
    stopped = run_fleet(["list", *connection(broker), "--wait", "0.5"])
    assert stopped.stdout.splitlines()[1].split()[:2] == [device, "stopped"]
