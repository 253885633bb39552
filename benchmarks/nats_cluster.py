"""A real three-node NATS cluster with JetStream and MQTT on free loopback ports: for the cluster tests and the
broker load benchmark's --cluster mode.

Debian's nats-server (2.9) speaks MQTT 3.1.1 alone and keeps MQTT sessions, QoS 1 messages and retained messages
in JetStream streams. It makes those streams with as many replicas as a node has routes (at most 3), so nodes
that route to the two others alone would make them R2, which loses its quorum when one node dies: each node
asks for `stream_replicas: 3` instead, so the two survivors keep a majority and, after a leader election (a few
seconds), hold every session and retained message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.mosquitto import free_port

HOST = "127.0.0.1"
CLUSTER_NAME = "yolo-edge"
NODES = 3
# Raft elects a new leader 4 to 9 s after the old one went silent (nats-server 2.9); more on a loaded machine.
FORM_TIMEOUT_S = 60.0


def nats_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if Path(p).exists()), None
    )


@dataclass(frozen=True)
class NodePorts:
    """One node's loopback ports: MQTT clients, cluster routes, HTTP monitoring (/healthz, /routez)."""

    name: str
    mqtt: int
    cluster: int
    monitor: int

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        """host:port of its MQTT listener, as `[mqtt] hosts` takes it."""
        return f"{HOST}:{self.mqtt}"


class NatsNode:
    """One nats-server process of the cluster; its config and log in `workdir`, its JetStream store below it."""

    def __init__(self, ports: NodePorts, peers: tuple[NodePorts, ...], workdir: Path) -> None:
        self.ports = ports
        self.config_path = workdir / f"{ports.name}.conf"
        self.log_path = workdir / f"{ports.name}.log"
        routes = ", ".join(f'"nats-route://{HOST}:{peer.cluster}"' for peer in peers)
        self.config_path.write_text(
            f'server_name: "{ports.name}"\n'
            f'listen: "{HOST}:-1"\n'  # the NATS protocol's own port: unused here, any free one
            f'http: "{HOST}:{ports.monitor}"\n'
            f'jetstream {{ store_dir: "{workdir / ports.name}" }}\n'
            f'cluster {{ name: "{CLUSTER_NAME}", listen: "{HOST}:{ports.cluster}", routes: [{routes}] }}\n'
            f'mqtt {{ listen: "{HOST}:{ports.mqtt}", stream_replicas: {NODES} }}\n'
        )
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, binary: str) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([binary, "-c", str(self.config_path)], stdout=log, stderr=log)

    def kill(self) -> None:
        """kill -9: no goodbye to its peers or clients, connections cut mid-flight."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def monitor(self, path: str) -> dict:
        """The node's HTTP monitoring endpoint `path` (/routez, /jsz), as JSON."""
        with urllib.request.urlopen(f"http://{HOST}:{self.ports.monitor}{path}", timeout=2) as answer:
            return json.loads(answer.read())

    def log_tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def mqtt_answers(port: int, timeout: float = 5.0) -> bool:
    """Whether an MQTT 3.1.1 CONNECT on HOST:port gets a CONNACK that accepts it within `timeout`.

    A NATS node answers only once JetStream has a meta leader and the MQTT streams exist.
    """
    accepted = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else accepted.set()
    try:
        client.connect(HOST, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


class NatsCluster:
    """Three nats-server nodes routed to each other, JetStream (R3 MQTT streams) and MQTT on each.

    A context manager: leaving it stops every node still running (a failed test leaves nothing behind).
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ports = tuple(NodePorts(f"n{i + 1}", free_port(), free_port(), free_port()) for i in range(NODES))
        self.nodes = tuple(NatsNode(p, tuple(q for q in ports if q != p), workdir) for p in ports)

    @property
    def addresses(self) -> list[str]:
        """Every node's MQTT listener as host:port, in node order."""
        return [node.ports.address for node in self.nodes]

    def alive(self) -> list[NatsNode]:
        return [node for node in self.nodes if node.running]

    def node_at(self, port: int) -> NatsNode:
        """The node whose MQTT listener is on `port`."""
        return next(node for node in self.nodes if node.ports.mqtt == port)

    def start(self, timeout: float = FORM_TIMEOUT_S) -> NatsCluster:
        binary = nats_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed; `make test` installs it with apt (package nats-server)")
        for node in self.nodes:
            node.start(binary)
        self.wait_formed(timeout)
        return self

    def wait_formed(self, timeout: float = FORM_TIMEOUT_S) -> None:
        """Until every running node routes to every other running node, and answers MQTT.

        After a kill this is the survivors agreeing again: the MQTT answer needs a JetStream meta leader.
        """
        deadline = time.monotonic() + timeout
        waiting = "the nodes to start"
        while True:
            alive = self.alive()
            if len(alive) < sum(node.process is not None for node in self.nodes):
                dead = next(node for node in self.nodes if node.process is not None and not node.running)
                if dead.process is not None and dead.process.returncode not in (-9, None):
                    raise RuntimeError(f"nats-server {dead.ports.name} exited: {dead.log_tail()}")
            waiting = self._not_formed(alive)
            if waiting is None:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {node.ports.name}:\n{node.log_tail(800)}" for node in self.nodes)
                raise RuntimeError(f"the NATS cluster did not form within {timeout:.0f} s: {waiting}\n{logs}")
            time.sleep(0.2)

    def _not_formed(self, alive: list[NatsNode]) -> str | None:
        """What the cluster still waits for, or None once it formed."""
        names = {node.ports.name for node in alive}
        for node in alive:
            try:
                routes = node.monitor("/routez").get("num_routes", 0)
                leader = node.monitor("/jsz").get("meta_cluster", {}).get("leader")
            except OSError:
                return f"{node.ports.name}'s monitoring port"
            if routes < len(alive) - 1:
                return f"{node.ports.name}'s routes ({routes} of {len(alive) - 1})"
            if leader not in names:
                return f"a JetStream meta leader among the running nodes, seen from {node.ports.name}"
        for node in alive:
            if not mqtt_answers(node.ports.mqtt):
                return f"an MQTT CONNACK from {node.ports.name}"
        # The first CONNACK made the MQTT streams; after a kill, each needs a leader among the survivors.
        for node in alive:
            try:
                accounts = node.monitor("/jsz?accounts=true&streams=true").get("account_details") or []
            except OSError:
                return f"{node.ports.name}'s monitoring port"
            for stream in (s for account in accounts for s in account.get("stream_detail") or []):
                if (stream.get("cluster") or {}).get("leader") not in names:
                    return (
                        f"a leader of stream {stream.get('name')} among the running nodes, seen from {node.ports.name}"
                    )
        return None

    def kill(self, node: NatsNode) -> None:
        node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
