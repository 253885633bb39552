"""Several broker nodes and two MQTT versions (agent/transport/nodes.py), on real brokers on loopback.

A broker that speaks MQTT 3.1.1 alone is Debian's nats-server (its MQTT listener answers an MQTT 5 CONNECT
with "Unsupported protocol version"); one that hangs up on an MQTT 5 CONNECT instead, as brokers that do
not parse it do, is a Mosquitto behind a small proxy that closes such connections. One NATS node and one
Mosquitto serve the whole module; the failover test kills a Mosquitto of its own.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agent.cli import main
from agent.transport import topics
from agent.transport.client import ConnectionHooks, MqttConnection, Outcome, probe_broker
from agent.transport.connection import MqttSettings
from agent.transport.nodes import Node
from agent.transport.operator import MqttSession
from benchmarks.mosquitto import free_port
from tests.agent.agent_process import (
    LOOP_FPS,
    AgentProcess,
    Observer,
    agent_env,
    distinct_events,
    outbox_events,
    retained,
    run_agent,
    wait_until,
)
from tests.broker import Broker
from tests.fault.processes import kill_broker

HOST = "127.0.0.1"
DEVICE = "multi-node"


def nats_binary() -> str | None:
    return shutil.which("nats-server") or next((p for p in ("/usr/sbin/nats-server",) if Path(p).exists()), None)


def settings(*ports: int, **values: object) -> MqttSettings:
    nodes = tuple(Node(HOST, port) for port in ports)
    return MqttSettings(HOST, ports[0], f"yolo-edge/{DEVICE}", "nodes-test", hosts=nodes, reconnect_max_s=1, **values)


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One nats-server with JetStream and MQTT (3.1.1 only) on a free port; yields the port."""
    binary = nats_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (Debian package nats-server; `make test` installs it)")
    workdir, port = tmp_path_factory.mktemp("nats"), free_port()
    config = workdir / "nats.conf"
    config.write_text(
        f'server_name: "single"\nlisten: "{HOST}:-1"\njetstream {{ store_dir: "{workdir / "js"}" }}\n'
        f'mqtt {{ listen: "{HOST}:{port}" }}\n'
    )
    with open(workdir / "nats.log", "wb") as log:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30  # JetStream makes its MQTT streams before the first CONNACK
        while True:
            try:
                probe_broker(settings(port, protocol="3.1.1"), timeout_s=2)
                break
            except ConnectionError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_tail = (workdir / "nats.log").read_text()[-800:]
                    raise RuntimeError(f"nats-server did not answer MQTT: {log_tail}") from error
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    running = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield running
    running.stop()


class Mqtt5Dropper:
    """A TCP proxy to `upstream` that closes every connection whose CONNECT asks for MQTT 5, at once and
    without a word, as a broker that does not parse MQTT 5 does. levels: each CONNECT's protocol level."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.levels: list[int] = []
        self._links: list[socket.socket] = []
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while len(head) < 9:  # fixed header (2 bytes for a short CONNECT), "\0\4MQTT", the level
            chunk = client.recv(9 - len(head))
            if not chunk:
                client.close()
                return
            head += chunk
        self.levels.append(head[8])
        if head[8] == 5:
            client.close()
            return
        upstream = socket.create_connection((HOST, self.upstream))
        upstream.sendall(head)
        self._links += [client, upstream]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self) -> None:
        """Cut every connection through the proxy (the client sees its connection lost)."""
        for link in self._links:
            with contextlib.suppress(OSError):  # closed already by its pump
                link.shutdown(socket.SHUT_RDWR)
        self._links.clear()

    def close(self) -> None:
        self._server.close()
        self.cut()


WAIT_S = 10.0


# -- connecting: which node, which version ------------------------------------------------------------


def test_open_takes_the_first_node_that_answers_and_names_every_one_that_did_not(mosquitto: Broker) -> None:
    dead, other = free_port(), free_port()
    with MqttSession(settings(dead, mosquitto.port)) as session:
        assert session.where == f"{HOST}:{mosquitto.port}"
    with pytest.raises(ConnectionError) as raised:
        MqttSession(settings(dead, other)).connect()
    assert str(raised.value) == (
        f"cannot connect to {HOST}:{dead}: [Errno 111] Connection refused; "
        f"cannot connect to {HOST}:{other}: [Errno 111] Connection refused"
    )


def test_auto_speaks_311_to_a_broker_that_refuses_mqtt_5(nats: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="yolo_edge.mqtt")
    assert probe_broker(settings(nats), timeout_s=5) == f"{HOST}:{nats}"
    with MqttSession(settings(nats)) as session:  # a round trip in 3.1.1
        session.subscribe(["yolo-edge/nodes-test/#"])
        session.publish("yolo-edge/nodes-test/x", b"311")
        assert next(m.payload for m in session.messages(time.monotonic() + 5)) == b"311"
    connection = MqttConnection(settings(nats), ConnectionHooks())
    connection.start()  # in the background, as the agent connects
    try:
        assert connection.wait_first_attempt(10).outcome is Outcome.CONNECTED, "a refusal of MQTT 5 is not the end"
        wait_until("the line", lambda: f"connected to {HOST}:{nats} (MQTT 3.1.1)" in caplog.text, WAIT_S)
    finally:
        connection.close()


def test_protocol_5_against_a_311_broker_fails_with_one_line_saying_what_to_set(
    nats: int, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = (
        f"{HOST}:{nats} refused the connection: Unsupported protocol version; "
        'it does not speak MQTT 5: set [mqtt] protocol = "auto"'
    )
    with pytest.raises(ConnectionError) as raised:
        probe_broker(settings(nats, protocol="5"), timeout_s=5)
    assert str(raised.value) == expected
    monkeypatch.setenv("YOLO_EDGE_MQTT_PROTOCOL", "5")
    assert main(["fleet", "--host", f"{HOST}:{nats}", "list", "--wait", "0.1"]) == 2
    assert capsys.readouterr().err == f"yolo-edge-agent fleet: broker error: {expected}\n"
    # The agent's connection keeps trying (the broker may change) and says it once.
    caplog.set_level(logging.WARNING, logger="yolo_edge.mqtt")
    connection = MqttConnection(settings(nats, protocol="5"), ConnectionHooks())
    connection.start()
    try:
        attempt = connection.wait_first_attempt(10)
        assert (attempt.outcome, attempt.detail) == (Outcome.REFUSED, "Unsupported protocol version")
        # The outcome is recorded before paho's thread logs it: wait for the line, then count it.
        wait_until("the refusal's log line", lambda: f"{expected}; retrying" in caplog.text, WAIT_S)
        assert caplog.text.count(f"{expected}; retrying") == 1, caplog.text
    finally:
        connection.close()


def test_auto_speaks_311_to_a_broker_that_hangs_up_on_mqtt_5_and_remembers_it(mosquitto: Broker) -> None:
    proxy = Mqtt5Dropper(mosquitto.port)
    connects: list[bool] = []
    connection = MqttConnection(settings(proxy.port), ConnectionHooks(connected=lambda: connects.append(True)))
    try:
        with MqttSession(settings(proxy.port)) as session:  # open(): the operator's tools
            assert session.where == f"{HOST}:{proxy.port}"
        assert proxy.levels == [5, 4]
        connection.start()  # the agent's way: remembered for this node after the first 3.1.1 connection
        wait_until("connected", lambda: connection.status().connected, WAIT_S)
        proxy.cut()
        wait_until("connected again", lambda: len(connects) == 2, WAIT_S)
        assert proxy.levels == [5, 4, 5, 4, 4], "a lost connection goes back in 3.1.1 at once"
    finally:
        connection.close()
        proxy.close()


# -- the agent: a node killed mid-run, a 3.1.1 broker --------------------------------------------------


def test_the_agent_moves_to_the_next_node_when_its_broker_dies_and_loses_no_event(
    tmp_path: Path, mosquitto: Broker, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> None:
    first = Broker(tmp_path).start()
    state = tmp_path / "state"
    names = ("status", "events", "stats")
    discovery = topics.ha_discovery_topic("homeassistant", DEVICE)
    watch_first = Observer(first.host, first.port, DEVICE, names=names)
    watch_next = Observer(mosquitto.host, mosquitto.port, DEVICE, names=names, also=(discovery,))
    nodes = f"{first.host}:{first.port},{mosquitto.host}:{mosquitto.port}"
    env = agent_env(
        state, mqtt_hosts=nodes, source_fps=LOOP_FPS, stats_interval=1, events_end_after=0.3, mqtt_reconnect_max_s=1
    )
    args = ["run", "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx), "--device-id", DEVICE]
    try:
        with AgentProcess(args, env, tmp_path) as agent:
            watch_first.wait_count("events", 3, timeout=30)
            killed = time.time()
            kill_broker(first)
            watch_next.wait_for(
                "events from after the kill on the next node",
                lambda: sum(e["ts"] > killed for e in watch_next.json("events")) >= 2,
                timeout=20,
            )
            held = retained(mosquitto.host, mosquitto.port, DEVICE, ("status", "stats"))
            assert held["status"].payload == b"online", "status is online, retained on the node it reached"
            assert watch_next.on_topic(discovery), "Home Assistant discovery is published on the new node"
            code, _ = agent.stop()
            assert code == 0, agent.describe()
            log = agent.stderr
            watch_next.wait_for("stopped", lambda: [m.payload for m in watch_next.on("status")][-1:] == [b"stopped"], 5)
    finally:
        watch_first.close()
        watch_next.close()
        first.stop()
    assert f"disconnected from {first.host}:{first.port}: " in log and f"trying {HOST}:{mosquitto.port} next" in log
    assert f"reconnected to {HOST}:{mosquitto.port}" in log, log
    arrived = sorted(watch_first.on("events") + watch_next.on("events"), key=lambda m: m.at)
    seqs = [event["seq"] for event in distinct_events(arrived, killed)]
    assert seqs == list(range(1, len(seqs) + 1)), "seq goes on across the nodes: no event lost, none repeated"
    assert outbox_events(state) == [], "the new node acknowledged everything"


def test_the_agent_speaks_311_to_a_broker_that_speaks_nothing_newer(
    tmp_path: Path, nats: int, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> None:
    with closing(Observer(HOST, nats, DEVICE, names=("status", "events", "objects"))) as watch:  # paho, MQTT 3.1.1
        env = agent_env(tmp_path / "state", mqtt_host=HOST, mqtt_port=nats, events_end_after=0.3)
        args = ["run", "--source", str(sample_video[0]), "--model", str(fixture_onnx), "--device-id", DEVICE]
        result = run_agent(args, env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"connected to {HOST}:{nats} (MQTT 3.1.1)" in result.stderr, result.stderr
        watch.wait_for("stopped", lambda: [m.payload for m in watch.on("status")][-1:] == [b"stopped"], 10)
        seqs = [event["seq"] for event in distinct_events(watch.on("events"))]
        assert seqs and seqs == list(range(1, len(seqs) + 1))
        assert {body["type"] for body in watch.json("objects")} >= {"new", "end"}
