"""Broker load, cluster mode: broker_load's simulated agents spread over a three-node NATS cluster, one node killed
in the middle of the run.

    python -m benchmarks.broker_load --cluster [--agents 10] [--fps 5] [--seconds 30] [--kill-at SECONDS]

Agent i is given the three nodes starting with node i mod 3 ([mqtt] hosts, protocol auto), so a third of the
agents are on node n1, which is killed (kill -9) at --kill-at seconds into the run (half of it by default). They
move to the next node, their outboxes replay what was not acknowledged. Two receivers on n3 subscribe to
everything, one at QoS 0 and one at QoS 1: nats-server 2.9 delivers a QoS 0 subscription straight from the
publishing node and a QoS 1 one through a JetStream consumer, which was seen to miss messages (see
tests/agent/transport/test_cluster.py). Counted for each receiver: every event seq of every agent (lost,
duplicated, out of order) and every detections message the loops handed over. Latency (receiver's clock minus
the payload's ts, one host) is split by when a message was stamped: before the kill, during the failover (from
the kill until the last moved agent's first message arrived), and after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from paho.mqtt import __version__ as PAHO_VERSION

from agent.system.board import cpu_model
from benchmarks.broker_load import (
    GRACE_S,
    Arrival,
    LoadRun,
    Losses,
    Receiver,
    detection_losses,
    event_losses,
    percentiles,
    plural,
    run_load,
)
from benchmarks.machine import load_average, logical_cpus
from benchmarks.nats_cluster import NatsCluster, NatsNode, nats_binary
from benchmarks.tables import Table, command_line, progress, render_markdown, render_text

KILLED, RECEIVING = 0, 2  # indexes of the node killed and of the node the receivers are on


@dataclass(frozen=True)
class ClusterRun:
    """One cluster run. qos0 / qos1: the run as each receiver saw it; killed_at: time.time() of the kill;
    moved: the agents that started on the killed node; back_s: per moved agent, seconds from the kill to its
    first message received after it (None: none came)."""

    qos0: LoadRun
    qos1: LoadRun
    killed: str
    killed_at: float
    moved: tuple[str, ...]
    back_s: dict[str, float | None]

    @property
    def recovered_at(self) -> float:
        """When the last moved agent was heard from again (the kill itself if none moved)."""
        backs = [b for b in self.back_s.values() if b is not None]
        return self.killed_at + (max(backs) if backs else 0.0)


@dataclass
class ClusterTarget:
    """run_load's view of the cluster: where the workers' errors say they connect, and no CPU figure."""

    host: str
    port: int

    def cpu_seconds(self) -> float | None:
        return None


def device_index(device: str) -> int:
    return int(device.rsplit("-", 1)[1])  # broker_load names them load-000, load-001, ...


def rotated(addresses: list[str], start: int) -> tuple[str, ...]:
    """The nodes in the order an agent starting on node `start` tries them."""
    return tuple(addresses[start:] + addresses[:start])


def run_cluster(args: argparse.Namespace, cluster: NatsCluster, state_root: Path) -> ClusterRun:
    addresses, receiving = cluster.addresses, cluster.nodes[RECEIVING]
    nodes_of = lambda device: rotated(addresses, device_index(device) % len(addresses))  # noqa: E731
    killed: list[float] = []

    def kill(node: NatsNode = cluster.nodes[KILLED]) -> None:
        killed.append(time.time())
        cluster.kill(node)
        progress(f"killed {node.ports.name} ({node.ports.address})")

    qos0 = Receiver(receiving.ports.host, receiving.ports.mqtt, nodelay=False, qos=0, name="receiver-qos0").start()
    qos1 = Receiver(receiving.ports.host, receiving.ports.mqtt, nodelay=False, qos=1, name="receiver-qos1").start()
    try:
        target = ClusterTarget(receiving.ports.host, receiving.ports.mqtt)
        run = run_load(args, target, qos0, state_root, nodes_of=nodes_of, at=(args.kill_at, kill))
        expected = sum(d.last_seq for d in run.devices)
        deadline = time.monotonic() + GRACE_S
        while qos1.events_received() < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        qos0.stop()
        qos1.stop()
    seen_by_qos1 = dataclasses.replace(
        run,
        arrivals=tuple(qos1.snapshot()),
        event_seqs=dict(qos1.event_seqs),
        detection_frames=dict(qos1.detection_frames),
    )
    moved = tuple(d.device for d in run.devices if device_index(d.device) % len(addresses) == KILLED)
    back_s = {device: first_after(run.arrivals, device, killed[0]) for device in moved}
    return ClusterRun(run, seen_by_qos1, cluster.nodes[KILLED].ports.name, killed[0], moved, back_s)


def first_after(arrivals: tuple[Arrival, ...], device: str, moment: float) -> float | None:
    """Seconds from `moment` to the first message of `device` that arrived after it."""
    times = [a.at for a in arrivals if a.device == device and a.at > moment]
    return min(times) - moment if times else None


# ----------------------------------------------------------------------------------------------
# Tables


def losses_rows(name: str, run: LoadRun) -> list[tuple[str, ...]]:
    rows = []
    for kind, found in (("events (QoS 1, outbox)", event_losses(run)), ("detections (QoS 0)", detection_losses(run))):
        rows.append((name, kind, *loss_cells(found)))
    return rows


def loss_cells(found: Losses) -> tuple[str, ...]:
    return (
        str(found.expected),
        str(found.received_unique),
        str(found.lost),
        str(found.duplicates),
        str(found.out_of_order),
    )


def failover_table(result: ClusterRun, args: argparse.Namespace) -> Table:
    run = result.qos0
    backs = [b for b in result.back_s.values() if b is not None]
    silent = [d for d, b in result.back_s.items() if b is None]
    back = f"median {np.median(backs):.1f} s, longest {max(backs):.1f} s" if backs else "none came back"
    rows = (
        ("node killed (kill -9)", f"{result.killed} at {result.killed_at - run.started_at:.1f} s of {args.seconds:g}"),
        ("agents on it, given the other two nodes next", f"{len(result.moved)} of {len(run.devices)}"),
        (
            "from the kill to each moved agent's next message",
            back + (f"; never: {', '.join(silent)}" if silent else ""),
        ),
        ("reconnects, all agents", str(sum(d.reconnects for d in run.devices))),
        ("QoS 0 messages the agents dropped while disconnected", str(sum(d.dropped_qos0 for d in run.devices))),
        ("outbox rows still pending after close", str(sum(d.outbox_pending for d in run.devices))),
    )
    return Table("Failover", ("what", "value"), rows)


def delivery_table(result: ClusterRun) -> Table:
    rows = losses_rows("QoS 0", result.qos0) + losses_rows("QoS 1", result.qos1)
    return Table(
        "What the receivers on a surviving node got",
        ("receiver's subscription", "messages", "sent", "received (distinct)", "lost", "duplicated", "out of order"),
        tuple(rows),
        (
            "sent: events = the last seq each agent's outbox gave out; detections = messages the frame loops handed "
            "to the publisher (QoS 0: dropped while an agent is disconnected, by design).",
            "A duplicate is a message sent again after the kill because its PUBACK never came back: QoS 1 allows it, "
            "and the seq tells it apart.",
        ),
    )


def window_of(result: ClusterRun, arrival: Arrival) -> str | None:
    run = result.qos0
    if arrival.ts is None or arrival.ts >= run.started_at + run.seconds:
        return None
    if arrival.ts < result.killed_at:
        return "before the kill" if arrival.ts >= run.steady_from else None
    return "during the failover" if arrival.ts < result.recovered_at else "after it"


def latency_table(result: ClusterRun) -> Table:
    run = result.qos0
    rows = []
    for window in ("before the kill", "during the failover", "after it"):
        for kind in ("detections", "events"):
            values = [
                a.latency_ms
                for a in run.arrivals
                if a.kind == kind and a.latency_ms is not None and window_of(result, a) == window
            ]
            p50, _, p99, worst = percentiles(values)
            rows.append((window, kind, str(len(values)), f"{p50:.1f}", f"{p99:.1f}", f"{worst:.1f}"))
    during = result.recovered_at - result.killed_at
    return Table(
        "Latency before and after the kill (QoS 0 receiver), ms",
        ("stamped", "messages", "count", "p50", "p99", "max"),
        tuple(rows),
        (
            f"before: from {run.steady_from - run.started_at:g} s (after the start burst) to the kill; during: the "
            f"{during:.1f} s from the kill until the last moved agent was heard from again, events that waited in "
            "an outbox included; after: from then to the end of the run.",
        ),
    )


def facts_table(result: ClusterRun, args: argparse.Namespace) -> Table:
    rows = (
        ("cpu", cpu_model()),
        ("cores", logical_cpus()),
        ("broker", f"{nats_version()}, 3 nodes on 127.0.0.1, JetStream, mqtt stream_replicas 3"),
        (
            "agents",
            f"{args.agents} at {args.fps:g} fps for {args.seconds:g} s, "
            f"in {plural(args.processes, 'process', 'processes')}",
        ),
        ("paho-mqtt", PAHO_VERSION),
        ("python", sys.version.split()[0]),
        *result.qos0.facts.items(),
    )
    return Table("Machine and set-up", ("fact", "value"), rows)


def nats_version() -> str:
    binary = nats_binary()
    if binary is None:
        return "nats-server"
    answer = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (answer.stdout or answer.stderr).strip() or "nats-server"


# ----------------------------------------------------------------------------------------------


def main_cluster(args: argparse.Namespace, argv: list[str]) -> int:
    """The --cluster mode of benchmarks.broker_load (its arguments already checked)."""
    if nats_binary() is None:
        print("broker_load: nats-server is not installed; `make mosquitto` installs it with apt", file=sys.stderr)
        return 2
    args.kill_at = args.seconds / 2 if args.kill_at is None else args.kill_at
    if not 0 < args.kill_at < args.seconds:
        print(f"--kill-at {args.kill_at:g} must fall within the run (0 to --seconds {args.seconds:g})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    load_at_start = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="broker-cluster-") as temp,
        tempfile.TemporaryDirectory(prefix="broker-cluster-state-", dir=args.state_dir) as state,
        NatsCluster(Path(temp)) as cluster,
    ):
        progress("starting a three-node NATS cluster")
        cluster.start()
        result = run_cluster(args, cluster, Path(state))
    result.qos0.facts.update(
        {"load average at start (1/5/15 min)": load_at_start, "load average at end": load_average()}
    )
    tables = [failover_table(result, args), delivery_table(result), latency_table(result), facts_table(result, args)]
    for table in tables:
        print(render_text(table))
    path = args.out / "broker_cluster.md"
    text = [
        "# Broker load on a NATS cluster, one node killed",
        "",
        f"`{command_line('benchmarks.broker_load', argv)}`",
        "",
    ]
    path.write_text("\n".join([*text, __doc__.split("\n\n", 2)[2].strip(), "", *map(render_markdown, tables)]))
    print(f"\nwrote {path}")
    return 0
