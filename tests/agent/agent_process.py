"""yolo-edge-agent as a user runs it (a subprocess), and a separate MQTT client that watches its topics.

Helpers for tests/agent/test_agent_run.py. Every wait has a timeout and says what it waited for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Broker

AGENT = (sys.executable, "-m", "agent.cli")
# The checkout these tests belong to: the agent subprocess must run its code, not that of whichever
# checkout the venv was installed from in editable mode (a worktree shares the venv of another).
ROOT = Path(__file__).resolve().parents[2]
PREFIX = "yolo-edge"
LOOP_FPS = 8  # pace of looping runs: events keep coming, one core stays free


def agent_env(state_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of an agent subprocess: ours without YOLO_EDGE_* variables, plus `settings`.

    settings: name=value pairs set as YOLO_EDGE_<NAME> (mqtt_keepalive=5 -> YOLO_EDGE_MQTT_KEEPALIVE=5).
    One inference thread (the machine is shared) and a 1 s reconnect cap are the defaults here.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("YOLO_EDGE_")}
    defaults: dict[str, object] = {"agent_state_dir": state_dir, "model_threads": 1, "mqtt_reconnect_max_s": 1}
    for name, value in (defaults | settings).items():
        env[f"YOLO_EDGE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    # The agent of this checkout, not the one the venv was installed from (another worktree's, perhaps).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def broker_args(host: str, port: int, device_id: str) -> list[str]:
    return ["--mqtt-host", host, "--mqtt-port", str(port), "--device-id", device_id]


class AgentProcess:
    """`yolo-edge-agent <args>` in the background; stdout and stderr go to files in `workdir`.

    A context manager: leaving it kills the agent if it still runs (a failed test leaves nothing behind).
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        name: str = "agent",
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """preexec_fn: run in the child before the agent starts (a resource limit it must start under)."""
        self.args = args
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [*AGENT, *args], stdout=out, stderr=err, env=env, cwd=workdir, preexec_fn=preexec_fn
            )
        self.started = time.monotonic()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        return f"agent {' '.join(self.args)} (exit code {self.process.poll()}); stderr:\n{self.stderr[-3000:]}"

    def wait_log(self, text: str, timeout: float) -> None:
        """Wait until stderr contains `text`; fail at once if the agent exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if not self.running:
                raise AssertionError(f"the agent exited before logging {text!r}: {self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not log {text!r} within {timeout} s: {self.describe()}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """The exit code, once the agent exited by itself within `timeout` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {timeout} s: {self.describe()}") from None

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took to exit)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        """kill -9: no clean shutdown, no DISCONNECT, nothing flushed."""
        self.process.kill()
        self.process.wait(5)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.running:
            self.kill()


def looping_agent(
    tmp_path: Path,
    broker: Broker | None,
    device_id: str,
    model: Path,
    video: Path,
    state_dir: Path | None = None,
    name: str = "agent",
    preexec_fn: Callable[[], None] | None = None,
    **settings: object,
) -> AgentProcess:
    """The agent on `video` played in a loop at LOOP_FPS, stats every second: it runs until stopped.

    broker None: `settings` say where the broker is (mqtt_hosts="host:port,...", a cluster's nodes).
    """
    where = broker_args(broker.host, broker.port, device_id) if broker else ["--device-id", device_id]
    args = ["run", "--source", str(video), "--loop", "--model", str(model), *where]
    env = agent_env(state_dir or tmp_path / "state", **({"source_fps": LOOP_FPS, "stats_interval": 1} | settings))
    return AgentProcess(args, env, tmp_path, name, preexec_fn)


def run_agent(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the agent to its end; its output as text."""
    try:
        return subprocess.run([*AGENT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"agent {' '.join(args)} did not finish within {timeout} s: {error.stderr}") from None


@dataclass(frozen=True)
class Message:
    """One message the observer received. at: time.time() when it arrived (payload times are wall clock too)."""

    at: float
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def name(self) -> str:
        """The topic below `<prefix>/<device>/` (status, detections, events, stats)."""
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.payload)


class Observer:
    """A separate MQTT client recording everything under `<prefix>/<device>/#` (and `also`) at QoS 1.

    names: the topics below `<prefix>/<device>/` to subscribe to instead of all of them (a long run
    need not receive a detections message per frame). qos: the subscriptions' (NATS 2.9 drops the odd
    message to a QoS 1 subscription, tests/agent/transport/test_cluster.py).

    It subscribes again on every connect, so it keeps watching across a broker restart (paho
    reconnects it about once a second); `subscriptions` counts the SUBACKs.
    """

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        also: tuple[str, ...] = (),
        names: tuple[str, ...] = ("#",),
        qos: int = 1,
    ) -> None:
        self.topic_prefix = f"{PREFIX}/{device_id}"
        self.qos = qos
        self.also = also
        self.names = names
        self.messages: list[Message] = []
        self.subscriptions = 0
        self._changed = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        try:
            self.wait_subscribed(1, timeout)
        except AssertionError:
            self.close()
            raise

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        if not reason.is_failure:
            topics = [f"{self.topic_prefix}/{name}" for name in self.names] + list(self.also)
            client.subscribe([(topic, self.qos) for topic in topics])

    def _on_subscribe(self, *args: object) -> None:
        with self._changed:
            self.subscriptions += 1
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(Message(time.time(), message.topic, message.payload, message.qos, message.retain))
            self._changed.notify_all()

    def on(self, name: str) -> list[Message]:
        """Messages received on `<prefix>/<device>/<name>`, in arrival order."""
        with self._changed:
            return [m for m in self.messages if m.topic == f"{self.topic_prefix}/{name}"]

    def json(self, name: str) -> list[Any]:
        return [m.json() for m in self.on(name)]

    def on_topic(self, topic: str) -> list[Message]:
        """Messages received on a full topic (one of `also`), in arrival order."""
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` (evaluated after each message; it may call on() and json())."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last messages: {seen}")
                # A timeout as well as the notification: predicates may depend on more than messages.
                self._changed.wait(min(remaining, 0.1))

    def wait_count(self, name: str, count: int, timeout: float) -> list[Message]:
        self.wait_for(f"{count} message(s) on {name}", lambda: len(self.on(name)) >= count, timeout)
        return self.on(name)

    def wait_subscribed(self, count: int, timeout: float) -> None:
        self.wait_for(f"subscription number {count}", lambda: self.subscriptions >= count, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(host: str, port: int, device_id: str, names: tuple[str, ...], timeout: float = 5.0) -> dict[str, Message]:
    """What a client subscribing now is given as retained, by topic name (waits until each of `names` came).

    A publisher that has just connected may still be handing its retained messages over, and a
    subscriber arriving mid-way gets them live, with the retain flag off. So a first observer waits
    until each of `names` has passed, live or retained; the broker then holds them for the second.
    That one knows it has every retained message when a marker it publishes itself comes back: the
    broker queues what it retains while handling the SUBSCRIBE, before any later PUBLISH of the
    same client (a QoS 1 marker: it waits behind a retained QoS 1 message, never overtakes it).
    """
    with closing(Observer(host, port, device_id, timeout=timeout)) as first:
        first.wait_for(f"messages on {', '.join(names)}", lambda: all(first.on(name) for name in names), timeout)
    marker = f"yolo-edge-test/marker/{uuid.uuid4().hex}"  # outside every device's topics: no other client sees it
    with closing(Observer(host, port, device_id, timeout=timeout, also=(marker,))) as observer:
        observer.wait_for(
            f"retained {', '.join(names)}",
            lambda: all(any(m.retain for m in observer.on(name)) for name in names),
            timeout,
        )
        observer.client.publish(marker, b"", qos=1)
        observer.wait_for("the marker after the retained messages", lambda: bool(observer.on_topic(marker)), timeout)
        return {m.name: m for m in list(observer.messages) if m.retain}


def outbox_events(state_dir: Path) -> list[dict[str, Any]]:
    """The events waiting in the agent's outbox file, oldest first (read while the agent may write)."""
    path = state_dir / "outbox.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=5.0)
    try:
        rows = db.execute("SELECT topic, payload FROM messages ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return []
    finally:
        db.close()
    return [json.loads(payload) for topic, payload in rows if topic.endswith("/events")]


def open_presences(events: list[dict]) -> set[str]:
    """Labels started and not yet ended."""
    labels: set[str] = set()
    for event in sorted(events, key=lambda e: e["seq"]):
        if event["type"] == "start":
            labels.add(event["label"])
        elif event["type"] == "end":
            labels.discard(event["label"])
    return labels


def distinct_events(messages: list[Message], *outages_began: float) -> list[dict]:
    """Events by seq, checking no seq is given to two events and nothing goes out twice.

    The one repeat QoS 1 allows: a message in flight when the broker stopped (it reached the observer,
    its PUBACK never reached the agent), sent again after the reconnect, byte for byte.
    outages_began: time.time() when each outage began.
    """
    first: dict[int, Message] = {}
    for message in messages:
        seq = message.json()["seq"]
        if seq in first:
            assert message.payload == first[seq].payload, f"seq {seq} was given to two different events"
            straddles = any(first[seq].at < began <= message.at for began in outages_began)
            assert straddles, f"seq {seq} came twice"
        else:
            first[seq] = message
    assert list(first) == sorted(first), "events arrive in seq order"
    return [first[seq].json() for seq in sorted(first)]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


OBSERVER_USER, OBSERVER_PASSWORD = "observer", "secret"


def start_gated_broker(workdir: Path) -> Broker:
    """A broker where the observer has a password and the agent (anonymous) can be kept out for a while.

    After a restart the observer must be subscribed before the agent replays its outbox (nothing
    persists in the broker): a test restarts it with anonymous clients refused, subscribes the
    observer (OBSERVER_USER, OBSERVER_PASSWORD), then lets the agent in (set_anonymous).
    """
    password_file = workdir / "passwd"
    command = ["mosquitto_passwd", "-b", "-c", str(password_file), OBSERVER_USER, OBSERVER_PASSWORD]
    subprocess.run(command, check=True, timeout=10)
    # As root, mosquitto drops to user `mosquitto`, which cannot read pytest's 0700 directory.
    config = f"password_file {password_file}\n" + ("user root\n" if os.geteuid() == 0 else "")
    return Broker(workdir, extra_config=config, allow_anonymous=True).start()


def set_anonymous(broker: Broker, allowed: bool) -> None:
    """Let clients without a password in, or not; a running broker rereads its config on SIGHUP."""
    text = re.sub(r"allow_anonymous \w+", f"allow_anonymous {str(allowed).lower()}", broker.config_path.read_text())
    broker.config_path.write_text(text)
    if broker.process is not None:
        broker.process.send_signal(signal.SIGHUP)


class MjpegServer:
    """multipart/x-mixed-replace stream of the given JPEG frames, over and over, on 127.0.0.1.

    mode, switched by the test at any time: `good`, `corrupt` (a JPEG header, then noise) or `stall`
    (connected, sending nothing). stop() and start() again keep the port, as a camera rebooting would.
    """

    def __init__(self, jpegs: list[bytes], fps: float = 10.0) -> None:
        self.jpegs = jpegs
        self.fps = fps
        self.mode = "good"
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        stream = self
        self._stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            timeout = 2.0  # a client that stops reading cannot hold a handler thread forever

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                count = 0
                try:
                    while not stream._stopping.wait(1.0 / stream.fps):
                        if stream.mode == "stall":
                            continue
                        jpeg = stream.jpegs[count % len(stream.jpegs)]
                        if stream.mode == "corrupt":
                            jpeg = jpeg[:20] + bytes(reversed(jpeg[20:]))
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                        count += 1
                except OSError:
                    pass  # the client went away

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = False  # server_close() joins the handlers: nothing outlives stop()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(5.0)
        self._server = None


def iter_json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
