"""`yolo-edge-fleet exporter` as a user runs it: a subprocess on a free port, a real Mosquitto, a real agent.

Devices are the real agent and simulated ones: retained status, stats, zones and lines published in the agent's
own format (tests/fleet/exporter_payloads.py, agent/runtime/messages.py). /metrics is scraped over HTTP
and parsed with prometheus_client's parser. Every wait polls a condition with a timeout.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.runtime.messages import lines_payload, zones_payload
from agent.transport.encoding import dumps
from fleet.cli import main
from tests.agent.agent_process import ROOT, AgentProcess, Observer, agent_env, broker_args
from tests.broker import Broker, free_port
from tests.fleet.exporter_payloads import SHA, stats_body, stats_payload

PREFIX = "yolo-edge"
DASHBOARD = ROOT / "fleet" / "grafana" / "yolo-edge-fleet.json"
MIB = 1024 * 1024
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    """`python -m fleet.cli exporter` against `broker`; scrape() reads /metrics. A context manager that kills it.

    nodes: a cluster's nodes as host:port (`--host` comma separated) instead of `broker`.
    """

    def __init__(self, broker: Broker | None, workdir: Path, nodes: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.stderr_path = workdir / f"exporter-{self.port}.stderr"
        env = agent_env(workdir / "unused-state")  # PYTHONPATH of this checkout, no YOLO_EDGE_* of ours
        where = ["--host", ",".join(nodes)] if broker is None else ["--host", broker.host, "--port", str(broker.port)]
        args = ["exporter", *where, "--listen", f"127.0.0.1:{self.port}"]
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli", *args], stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=workdir
            )
        self.wait("the exporter to serve /metrics", lambda s: ("yolo_edge_exporter_broker_connected", ()) in s, 20)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return response.read().decode()

    def scrape(self) -> Samples:
        return samples_of(self.text())

    def wait(self, what: str, predicate: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
        """Scrape until predicate(samples) holds; fail with the last scrape if it does not in time."""
        deadline = time.monotonic() + timeout
        samples: Samples = {}
        while True:
            assert self.process.poll() is None, f"the exporter exited ({self.process.returncode}): {self.stderr}"
            try:
                samples = self.scrape()
            except OSError:
                samples = {}  # not listening yet
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                shown = "\n".join(f"{k} {v}" for k, v in samples.items() if k[0].startswith("yolo_edge"))
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; last scrape:\n{shown}")
            time.sleep(0.1)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


def samples_of(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


class Devices:
    """Simulated devices: one paho client publishing retained messages as agents do, each acknowledged."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def publish(self, device: str, kind: str, payload: bytes | str, retain: bool = True) -> float:
        """Publish and return time.time() once the broker acknowledged it."""
        self.client.publish(f"{PREFIX}/{device}/{kind}", payload, qos=1, retain=retain).wait_for_publish(5)
        return time.time()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Exporter, Devices]]:
    workdir = tmp_path_factory.mktemp("exporter")
    broker = Broker(workdir).start()
    devices = Devices(broker)
    try:
        with Exporter(broker, workdir) as exporter:
            yield broker, exporter, devices
    finally:
        devices.close()
        broker.stop()


def is_up(device: str, up: float = 1.0) -> Callable[[Samples], bool]:
    return lambda samples: get(samples, "yolo_edge_up", device=device) == up


# -- simulated devices --------------------------------------------------------------------------------


def publish_full(devices: Devices, device: str) -> dict:
    body = stats_body(time.time(), window_s=30.0)
    devices.publish(device, "status", "online")
    devices.publish(device, "stats", dumps(body))
    devices.publish(device, "zones", zones_payload({"driveway": {"person": 2, "car": 0}, "door": {"person": 1}}, 1.0))
    crossed = {"gate": {"in": {"person": 5, "car": 1}, "out": {"person": 4}}}
    devices.publish(device, "lines", lines_payload(crossed, 1.0, 2.0, {"gate": [[0.0, 0.5], [1.0, 0.5]]}))
    return body


def test_a_simulated_device_exports_what_it_published(setup: tuple[Broker, Exporter, Devices]) -> None:
    _, exporter, devices = setup
    body = publish_full(devices, "sim-full")
    crossed = {"device": "sim-full", "line": "gate", "direction": "out", "label": "person"}
    samples = exporter.wait(
        "sim-full's zones and lines",
        lambda s: (
            get(s, "yolo_edge_zone_objects", device="sim-full", zone="door", label="person") == 1
            and get(s, "yolo_edge_line_crossings_total", **crossed) == 4
        ),
    )
    expected = {
        ("yolo_edge_up", ()): 1.0,
        ("yolo_edge_device_status", (("status", "online"),)): 1.0,
        ("yolo_edge_frames_per_second", ()): body["fps"],
        ("yolo_edge_uptime_seconds", ()): body["uptime_s"],
        ("yolo_edge_stats_interval_seconds", ()): 30.0,
        ("yolo_edge_resident_memory_bytes", ()): body["rss_mb"] * MIB,
        ("yolo_edge_cpu_temperature_celsius", ()): body["cpu_temp_c"],
        ("yolo_edge_frames_processed_total", ()): body["frames"]["processed"],
        ("yolo_edge_frames_detected_total", ()): body["frames"]["detected"],
        ("yolo_edge_tracks_active", ()): body["tracks"]["active"],
        ("yolo_edge_outbox_pending_messages", ()): body["mqtt"]["outbox_pending"],
        ("yolo_edge_mqtt_reconnects_total", ()): body["mqtt"]["reconnects"],
        ("yolo_edge_mqtt_dropped_messages_total", (("reason", "qos0_offline"),)): body["mqtt"]["dropped_qos0"],
        ("yolo_edge_source_reopens_total", ()): body["source"]["reopen_count"],
        ("yolo_edge_stage_latency_p50_seconds", (("stage", "inference"),)): body["latency_ms"]["inference"]["p50"]
        / 1e3,
        ("yolo_edge_stage_latency_p95_seconds", (("stage", "total"),)): body["latency_ms"]["total"]["p95"] / 1e3,
        ("yolo_edge_board_throttling", (("condition", "throttled"),)): 1.0,
        ("yolo_edge_zone_objects", (("label", "person"), ("zone", "driveway"))): 2.0,
        ("yolo_edge_zone_objects", (("label", "car"), ("zone", "driveway"))): 0.0,
        ("yolo_edge_line_crossings_total", (("direction", "in"), ("label", "person"), ("line", "gate"))): 5.0,
        ("yolo_edge_line_crossings_total", (("direction", "in"), ("label", "car"), ("line", "gate"))): 1.0,
        ("yolo_edge_line_crossings_total", (("direction", "out"), ("label", "person"), ("line", "gate"))): 4.0,
        ("yolo_edge_model_info", (("name", "shapes"), ("precision", "int8"), ("sha256", SHA[:12]))): 1.0,
    }
    for (name, labels), value in expected.items():
        assert get(samples, name, device="sim-full", **dict(labels)) == pytest.approx(value, rel=1e-12), name
    assert get(samples, "yolo_edge_last_seen_timestamp_seconds", device="sim-full") == pytest.approx(
        time.time(), abs=30
    )
    track_labels = {labels for name, labels in samples if name == "yolo_edge_zone_objects"}
    assert all(dict(labels).keys() == {"device", "zone", "label"} for labels in track_labels), "no per-object labels"


def test_the_scrape_passes_promtool(setup: tuple[Broker, Exporter, Devices]) -> None:
    _, exporter, devices = setup
    publish_full(devices, "sim-promtool")
    exporter.wait("sim-promtool", is_up("sim-promtool"))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian package prometheus): the exposition is not linted")
    checked = subprocess.run([promtool, "check", "metrics"], input=exporter.text(), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("status", ["stopped", "offline"])
def test_a_device_that_stops_or_goes_offline_is_down(setup: tuple[Broker, Exporter, Devices], status: str) -> None:
    _, exporter, devices = setup
    device = f"sim-{status}"
    publish_full(devices, device)
    exporter.wait(f"{device} up", is_up(device))
    devices.publish(device, "status", status)
    samples = exporter.wait(f"{device} down", is_up(device, 0.0))
    assert get(samples, "yolo_edge_device_status", device=device, status=status) == 1.0
    assert get(samples, "yolo_edge_frames_per_second", device=device) is None, "a down device's figures are not shown"
    assert get(samples, "yolo_edge_zone_objects", device=device, zone="door", label="person") is None


def test_a_device_gone_quiet_for_three_intervals_is_down(setup: tuple[Broker, Exporter, Devices]) -> None:
    _, exporter, devices = setup
    window = 1.5
    devices.publish("sim-quiet", "status", "online")
    sent = devices.publish("sim-quiet", "stats", stats_payload(time.time(), window_s=window))
    exporter.wait("sim-quiet up", is_up("sim-quiet"))
    samples = exporter.wait("sim-quiet down", is_up("sim-quiet", 0.0), timeout=20)
    assert time.time() - sent >= 3 * window, "down before three intervals had passed"
    assert get(samples, "yolo_edge_device_status", device="sim-quiet", status="online") == 1.0
    devices.publish("sim-quiet", "stats", stats_payload(time.time(), window_s=window))
    exporter.wait("sim-quiet up again with new stats", is_up("sim-quiet"))


def test_malformed_payloads_are_skipped_and_counted(setup: tuple[Broker, Exporter, Devices]) -> None:
    _, exporter, devices = setup
    publish_full(devices, "sim-bad")
    before = exporter.wait("sim-bad up", is_up("sim-bad"))
    bad = [
        ("stats", b"not json"),
        ("stats", b"\xff\xfe\xfd"),
        ("stats", b"[1, 2, 3]"),
        ("stats", dumps(stats_body(time.time(), fps="fast"))),
        ("stats", dumps(stats_body(time.time(), frames={"processed": "many"}))),
        ("status", b"maybe"),
        ("zones", dumps({"ts": time.time(), "zones": {"door": {"person": "one"}}})),
        ("zones", b"{"),
        ("lines", dumps({"ts": time.time(), "lines": {"gate": {"in": {"person": -1}}}})),
    ]
    for kind, payload in bad:
        devices.publish("sim-bad", kind, payload, retain=False)

    def malformed(samples: Samples) -> float:
        return sum(
            get(samples, "yolo_edge_exporter_malformed_messages_total", topic=t) or 0
            for t in ("status", "stats", "zones", "lines")
        )

    counted = malformed(before)
    after = exporter.wait("the malformed messages counted", lambda s: malformed(s) >= counted + len(bad))
    assert malformed(after) == counted + len(bad)
    assert get(after, "yolo_edge_exporter_malformed_messages_total", topic="stats") == (
        (get(before, "yolo_edge_exporter_malformed_messages_total", topic="stats") or 0) + 5
    )
    assert get(after, "yolo_edge_frames_per_second", device="sim-bad") == 7.94, "the last good stats still stand"
    assert get(after, "yolo_edge_device_status", device="sim-bad", status="online") == 1.0
    assert get(after, "yolo_edge_zone_objects", device="sim-bad", zone="door", label="person") == 1.0
    gate = {"line": "gate", "direction": "in", "label": "person"}
    assert get(after, "yolo_edge_line_crossings_total", device="sim-bad", **gate) == 5.0, "the last good lines stand"
    assert "skipped a malformed stats from sim-bad: not JSON" in exporter.stderr


def test_a_number_too_big_for_a_float_is_malformed_and_makes_no_device(
    setup: tuple[Broker, Exporter, Devices],
) -> None:
    """Valid JSON beyond a float's range: counted as malformed, one log line, no device made of it."""
    _, exporter, devices = setup
    publish_full(devices, "sim-huge")
    before = exporter.wait("sim-huge up", is_up("sim-huge"))
    huge = 10**400
    devices.publish("sim-huge", "stats", dumps(stats_body(time.time(), frames={"processed": huge})), retain=False)
    devices.publish("sim-huge-new", "stats", dumps(stats_body(time.time(), frames={"processed": huge})))
    devices.publish("sim-huge-new", "zones", zones_payload({"door": {"person": huge}}, time.time()))
    devices.publish("sim-huge-new", "lines", lines_payload({"gate": {"in": {"car": huge}, "out": {}}}, 1.0, 2.0, {}))

    def malformed(samples: Samples, topic: str) -> float:
        return get(samples, "yolo_edge_exporter_malformed_messages_total", topic=topic) or 0.0

    expected = {
        "stats": malformed(before, "stats") + 2,
        "zones": malformed(before, "zones") + 1,
        "lines": malformed(before, "lines") + 1,
    }
    after = exporter.wait(
        "the huge numbers counted as malformed", lambda s: all(malformed(s, t) >= n for t, n in expected.items())
    )
    assert {t: malformed(after, t) for t in expected} == expected
    assert not any(("device", "sim-huge-new") in labels for _, labels in after), "no device made of them"
    assert get(after, "yolo_edge_frames_processed_total", device="sim-huge") == 1200, "the last good stats stand"
    stderr = exporter.stderr
    assert "skipped a malformed stats from sim-huge-new: frames.processed is a 401-digit number" in stderr
    assert "Traceback" not in stderr and "OverflowError" not in stderr
    for kind in ("stats", "zones", "lines"):
        devices.publish("sim-huge-new", kind, b"")  # the next test's scrapes start clean


def test_a_device_whose_retained_messages_are_cleared_leaves_no_series(setup: tuple[Broker, Exporter, Devices]) -> None:
    _, exporter, devices = setup
    publish_full(devices, "sim-gone")
    exporter.wait("sim-gone up", is_up("sim-gone"))
    for kind in ("status", "stats", "zones", "lines"):
        devices.publish("sim-gone", kind, b"")
    exporter.wait("sim-gone gone", lambda s: not any(("device", "sim-gone") in labels for _, labels in s))


# -- the Grafana dashboard ----------------------------------------------------------------------------


def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return panels


def test_the_grafana_dashboard_charts_only_metrics_the_exporter_exposes(
    setup: tuple[Broker, Exporter, Devices],
) -> None:
    _, exporter, devices = setup
    publish_full(devices, "sim-grafana")
    samples = exporter.wait("sim-grafana up", is_up("sim-grafana"))
    exposed = {name for name, _ in samples}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "device" in variables and "yolo_edge_up" in json.dumps(variables["device"]["query"])
    exprs = [
        (panel["title"], target["expr"]) for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 9, exprs
    charted = set()
    for title, expr in exprs:
        names = set(re.findall(r"\b(?:yolo_edge|process)_[a-z0-9_]+", expr))
        assert names, f"panel {title!r} charts no exporter metric: {expr}"
        assert names <= exposed, f"panel {title!r} names metrics the exporter does not expose: {names - exposed}"
        charted |= names
    titles = " ".join(title.lower() for title, _ in exprs)
    for topic in ("up", "fps", "inference", "stage", "memory", "temperature", "outbox", "zone"):
        assert topic in titles, f"no panel about {topic}: {titles}"
    for panel in dashboard_panels(dashboard):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


# -- the real agent -----------------------------------------------------------------------------------

ZONE = """
[zones.everywhere]
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
inertia = 1
"""


def test_the_real_agent(
    setup: tuple[Broker, Exporter, Devices],
    tmp_path: Path,
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    broker, exporter, _ = setup
    device = "real-agent"
    config = tmp_path / "agent.toml"
    config.write_text(ZONE)
    args = ["run", "--config", str(config), "--source", str(sample_video[0]), "--loop", "--model", str(fixture_onnx)]
    env = agent_env(tmp_path / "state", source_fps=8, stats_interval=1)
    observer = Observer(broker.host, broker.port, device, names=("stats",))
    try:
        with AgentProcess([*args, *broker_args(broker.host, broker.port, device)], env, tmp_path) as agent:
            published: dict[float, dict] = {}

            def scraped_a_published_stats(samples: Samples) -> bool:
                assert agent.running, agent.describe()
                published.update({body["uptime_s"]: body for body in observer.json("stats")})
                uptime = get(samples, "yolo_edge_uptime_seconds", device=device)
                processed = get(samples, "yolo_edge_frames_processed_total", device=device)
                return uptime in published and bool(processed)

            samples = exporter.wait("the agent's stats", scraped_a_published_stats, timeout=60)
            body = published[get(samples, "yolo_edge_uptime_seconds", device=device)]
            assert get(samples, "yolo_edge_up", device=device) == 1.0
            assert get(samples, "yolo_edge_frames_per_second", device=device) == body["fps"]
            assert get(samples, "yolo_edge_frames_processed_total", device=device) == body["frames"]["processed"]
            assert get(samples, "yolo_edge_frames_detected_total", device=device) == body["frames"]["detected"]
            assert get(samples, "yolo_edge_resident_memory_bytes", device=device) == pytest.approx(body["rss_mb"] * MIB)
            inference = body["latency_ms"]["inference"]["p50"] / 1e3
            assert get(samples, "yolo_edge_stage_latency_p50_seconds", device=device, stage="inference") == inference
            assert get(samples, "yolo_edge_outbox_pending_messages", device=device) == body["mqtt"]["outbox_pending"]
            model = body["model"]
            info = {"name": model["name"], "precision": model["precision"], "sha256": model["sha256"][:12]}
            assert get(samples, "yolo_edge_model_info", device=device, **info) == 1.0
            assert model["name"] == fixture_onnx.stem
            zone_labels = {dict(labels)["label"] for name, labels in samples if name == "yolo_edge_zone_objects"}
            assert zone_labels, "the agent's zone counts are exported"
            agent.stop()
            samples = exporter.wait("the stopped agent down", is_up(device, 0.0))
            assert get(samples, "yolo_edge_device_status", device=device, status="stopped") == 1.0
    finally:
        observer.close()


# -- a broker restart ---------------------------------------------------------------------------------


def test_the_exporter_rides_out_a_broker_restart(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    try:
        with Exporter(broker, tmp_path) as exporter:
            exporter.wait("connected", lambda s: get(s, "yolo_edge_exporter_broker_connected") == 1.0)
            broker.stop()
            exporter.wait("disconnected", lambda s: get(s, "yolo_edge_exporter_broker_connected") == 0.0)
            broker.start()
            devices = Devices(broker)  # the broker kept nothing: a device announces itself again
            try:
                devices.publish("after-restart", "status", "online")
                devices.publish("after-restart", "stats", stats_payload(time.time(), window_s=30.0))
                exporter.wait("the device seen after the restart", is_up("after-restart"), timeout=20)
            finally:
                devices.close()
            assert "reconnected to" in exporter.stderr
    finally:
        broker.stop()


# -- errors a user can make ---------------------------------------------------------------------------


def test_a_missing_prometheus_client_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from fleet.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "exporter", "--port", "1"],
        capture_output=True,
        text=True,
        env=agent_env(tmp_path),
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "yolo-edge-fleet: the exporter needs prometheus_client: install the [fleet] extra "
        "(pip install 'yolo-edge[fleet]', or pip install -e '.[fleet]' in a checkout)"
    ]


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exporter", "--listen", "9108"]) == 2
    assert capsys.readouterr().err.startswith("yolo-edge-fleet: --listen '9108' is not HOST:PORT")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["exporter", "--listen", f"127.0.0.1:{port}", "--port", "1"]) == 2
    assert capsys.readouterr().err == f"yolo-edge-fleet: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    closed = free_port()
    assert main(["exporter", "--listen", f"127.0.0.1:{free_port()}", "--host", "127.0.0.1", "--port", str(closed)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"yolo-edge-fleet: broker error: cannot connect to 127.0.0.1:{closed}:") and err.count("\n") == 1
    )
