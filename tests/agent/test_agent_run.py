"""yolo-edge-agent end to end: the real command as a subprocess, a real Mosquitto, a separate subscriber.

What is checked is the contract the README documents (docs/topics.md, the commands, docs/configuration.md):
topics, payload fields, retained state, the last will, a clean stop on SIGTERM, the durable
outbox across a broker outage and across kill -9, `check`, the sources, `--dry-run`, and that
the fixture model finds the sample video's shapes where they are.

The agent runs with one inference thread (the machine is shared); looping runs are paced with
[source] fps so they do not take both cores for their whole length.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.transport import stats_schema
from converter.metrics import box_iou_xyxy
from fleet import view
from fleet.exporter import readings
from tests.agent.agent_process import (
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    AgentProcess,
    Message,
    MjpegServer,
    Observer,
    agent_env,
    broker_args,
    distinct_events,
    iter_json_lines,
    looping_agent,
    open_presences,
    outbox_events,
    retained,
    run_agent,
    set_anonymous,
    start_gated_broker,
    wait_until,
)
from tests.broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]
NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "star"}
STAGES = ("capture", "preprocess", "inference", "postprocess", "total")
VIDEO_FRAMES = 90
VIDEO_HW = (480, 640)
FOLDER_INDICES = (0, 15, 30, 45, 60, 75)  # video frames written as JPEGs for the folder source
MODEL_CONFIDENCE = 0.25  # the agent's default [model] confidence


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_identity(fixture_onnx: Path) -> dict[str, str]:
    """What detections and stats must say about the fixture model (a bare .onnx is named by its stem)."""
    digest = hashlib.sha256(fixture_onnx.read_bytes()).hexdigest()
    return {"name": fixture_onnx.stem, "precision": "fp32", "sha256": digest}


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory, sample_video: tuple[Path, list]) -> Path:
    """Some frames of the sample video as JPEG files, named so that sorted order is video order."""
    folder = tmp_path_factory.mktemp("frames")
    for index, image in video_frames(sample_video[0]).items():
        if index in FOLDER_INDICES:
            assert cv2.imwrite(str(folder / f"{index:03d}.jpg"), image)
    return folder


def video_frames(path: Path) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = {}
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames[len(frames)] = image
    finally:
        cap.release()
    assert len(frames) == VIDEO_FRAMES
    return frames


# -- the contract, one checker per topic ------------------------------------------------------------


def compact_json(payload: bytes) -> Any:
    """The payload parsed, after checking it is compact UTF-8 JSON as the topic contract says."""
    body = json.loads(payload.decode("utf-8"))
    assert json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8") == payload
    return body


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_detections(body: dict, model: dict[str, str], window: tuple[float, float], hw: tuple[int, int]) -> None:
    """One detections payload: every field the topic contract names, boxes normalized with x1 < x2 and y1 < y2."""
    assert {"frame", "ts", "source", "model", "latency_ms", "detections"} <= set(body), body
    assert isinstance(body["frame"], int) and body["frame"] >= 1
    assert is_number(body["ts"]) and window[0] <= body["ts"] <= window[1], (body["ts"], window)
    assert body["source"] == {"width": hw[1], "height": hw[0]}
    assert body["model"] == model
    latency = body["latency_ms"]
    assert set(STAGES) <= set(latency), latency
    assert all(is_number(latency[stage]) and latency[stage] >= 0 for stage in STAGES), latency
    parts = sum(latency[stage] for stage in STAGES if stage != "total")
    assert latency["total"] >= parts - 0.01, latency  # each figure is rounded to 0.001 ms
    assert latency["inference"] > 0
    assert isinstance(body["detections"], list)
    for detection in body["detections"]:
        assert {"label", "class_id", "confidence", "box"} <= set(detection), detection
        assert isinstance(detection["class_id"], int)
        assert NAMES.get(detection["class_id"], str(detection["class_id"])) == detection["label"]
        assert is_number(detection["confidence"]) and MODEL_CONFIDENCE <= detection["confidence"] <= 1
        box = detection["box"]
        assert len(box) == 4 and all(is_number(v) and 0 <= v <= 1 for v in box), box
        assert box[0] < box[2] and box[1] < box[3], box


def check_events(
    events: list[dict],
    window: tuple[float, float],
    first_seq: int = 1,
    all_ended: bool = True,
    last_frame: int | None = None,
) -> None:
    """Events in seq order: fields, seq rising by one, and each label's start -> update* -> end."""
    assert [e["seq"] for e in events] == list(range(first_seq, first_seq + len(events)))
    open_labels: set[str] = set()
    for event in events:
        assert {"seq", "type", "label", "count", "max_confidence", "ts", "frame"} <= set(event), event
        assert event["type"] in ("start", "update", "end"), event
        assert event["label"] in NAMES.values(), event
        assert is_number(event["max_confidence"]) and MODEL_CONFIDENCE <= event["max_confidence"] <= 1, event
        assert is_number(event["ts"]) and window[0] <= event["ts"] <= window[1], (event, window)
        assert isinstance(event["frame"], int) and event["frame"] >= 1, event
        if last_frame is not None:
            assert event["frame"] <= last_frame, event
        if event["type"] == "start":
            assert event["label"] not in open_labels, f"started twice without an end: {event}"
            assert event["count"] >= 1
            open_labels.add(event["label"])
        elif event["type"] == "update":
            assert event["label"] in open_labels, f"update without a start: {event}"
            assert event["count"] >= 1
        else:
            assert event["label"] in open_labels, f"end without a start: {event}"
            assert event["count"] == 0
            open_labels.discard(event["label"])
    times = [e["ts"] for e in events]
    assert times == sorted(times), "events go out in the order they happened"
    if all_ended:
        assert not open_labels, f"a clean stop ends every open presence; still open: {open_labels}"


def check_stats(body: dict, model: dict[str, str]) -> None:
    """One stats payload: fps, frame counters, per-stage p50/p95/max, rss, uptime, model, mqtt figures."""
    assert {"fps", "frames", "latency_ms", "rss_mb", "uptime_s", "model", "mqtt"} <= set(body), body
    assert is_number(body["fps"]) and body["fps"] >= 0
    frames = body["frames"]
    assert all(isinstance(frames[k], int) and frames[k] >= 0 for k in ("processed", "dropped", "stale")), frames
    if body["fps"] > 0:  # frames were processed in this window, so every stage has figures
        assert set(STAGES) <= set(body["latency_ms"]), body["latency_ms"]
    for stage, figures in body["latency_ms"].items():
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["max"], (stage, figures)
    assert is_number(body["rss_mb"]) and 10 < body["rss_mb"] < 2000
    assert is_number(body["uptime_s"]) and body["uptime_s"] >= 0
    assert body["model"] == model
    mqtt = body["mqtt"]
    assert isinstance(mqtt["outbox_pending"], int) and mqtt["outbox_pending"] >= 0, mqtt
    assert isinstance(mqtt["reconnects"], int) and mqtt["reconnects"] >= 0, mqtt


# -- one full run over the sample video, shared by the contract tests --------------------------------


@dataclass(frozen=True)
class RecordedRun:
    """A finished `run` and what the observer saw; window: (start, end) Unix seconds around the run."""

    result: subprocess.CompletedProcess
    observer: Observer
    window: tuple[float, float]
    kept: dict[str, Message]  # what a subscriber arriving after the run gets as retained

    def json(self, name: str) -> list[Any]:
        return self.observer.json(name)


def record_run(broker: Broker, device_id: str, args: list[str], env: dict[str, str], workdir: Path) -> RecordedRun:
    """Run the agent to its end against `broker`, watched from before it starts until its `stopped`."""
    observer = Observer(broker.host, broker.port, device_id)
    try:
        started = time.time()
        result = run_agent([*args, *broker_args(broker.host, broker.port, device_id)], env, workdir, timeout=120)
        ended = time.time()
        assert result.returncode == 0, result.stderr
        observer.wait_for("status stopped", lambda: b"stopped" in [m.payload for m in observer.on("status")], 5)
    finally:
        observer.close()
    kept = retained(broker.host, broker.port, device_id, ("status", "stats"))
    return RecordedRun(result, observer, (started, ended), kept)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path, sample_video: tuple[Path, list]):
    """The whole sample video (90 frames) through the agent, stats every second."""
    workdir = tmp_path_factory.mktemp("video-run")
    broker = Broker(workdir).start()
    try:
        args = ["run", "--source", str(sample_video[0]), "--model", str(fixture_onnx)]
        yield record_run(broker, "e2e-video", args, agent_env(workdir / "state", stats_interval=1), workdir)
    finally:
        broker.stop()


def test_video_file_runs_to_its_end_and_exits_0(video_run: RecordedRun) -> None:
    assert video_run.result.returncode == 0
    assert f"source ended after {VIDEO_FRAMES} frames" in video_run.result.stderr
    assert "connected to 127.0.0.1:" in video_run.result.stderr
    final = video_run.json("stats")[-1]
    frames = final["frames"]
    assert {k: frames[k] for k in ("processed", "dropped", "stale")} == {
        "processed": VIDEO_FRAMES,
        "dropped": 0,
        "stale": 0,
    }
    # Every frame taken from the source either ran the detector or was kept from it by the motion gate.
    assert frames["detected"] + frames["motion_skipped"] == VIDEO_FRAMES and frames["detected"] > 0, frames
    assert final["source"]["kind"] == "file"


def test_detections_payloads(video_run: RecordedRun, model_identity: dict[str, str]) -> None:
    messages = video_run.observer.on("detections")
    assert len(messages) >= VIDEO_FRAMES // 2, "most frames of the video hold shapes the model finds"
    assert all(m.qos == 0 and not m.retain for m in messages)
    bodies = [compact_json(m.payload) for m in messages]
    for body in bodies:
        check_detections(body, model_identity, video_run.window, VIDEO_HW)
        assert body["detections"], "empty frames are not published unless publish_empty is set"
    frames = [body["frame"] for body in bodies]
    assert frames == sorted(set(frames)) and frames[0] >= 1 and frames[-1] <= VIDEO_FRAMES
    assert [b["ts"] for b in bodies] == sorted(b["ts"] for b in bodies)


def test_events_payloads(video_run: RecordedRun) -> None:
    messages = video_run.observer.on("events")
    assert all(m.qos == 1 and not m.retain for m in messages)
    events = [compact_json(m.payload) for m in messages]
    assert {e["type"] for e in events} >= {"start", "end"}
    check_events(events, video_run.window, last_frame=VIDEO_FRAMES)
    # The clean stop at the end of the video ends what is still present, stamped with the last frame.
    assert any(e["type"] == "end" and e["frame"] == VIDEO_FRAMES for e in events)
    # Every label the agent published in detections started a presence.
    labels = {d["label"] for body in video_run.json("detections") for d in body["detections"]}
    assert labels == {e["label"] for e in events if e["type"] == "start"}


def test_stats_payloads_periodic_final_and_retained(video_run: RecordedRun, model_identity: dict[str, str]) -> None:
    messages = video_run.observer.on("stats")
    run_seconds = video_run.window[1] - video_run.window[0]
    assert len(messages) >= min(3, int(run_seconds) - 3), "one every [stats] interval (1 s here), one at the end"
    bodies = [compact_json(m.payload) for m in messages]
    for body in bodies:
        check_stats(body, model_identity)
    processed = [b["frames"]["processed"] for b in bodies]
    assert processed == sorted(processed) and processed[-1] == VIDEO_FRAMES
    assert any(b["fps"] > 0 for b in bodies)
    uptimes = [b["uptime_s"] for b in bodies]
    assert uptimes == sorted(uptimes) and uptimes[-1] <= run_seconds
    assert all(b["mqtt"]["reconnects"] == 0 for b in bodies)
    kept = video_run.kept["stats"]
    assert kept.retain and json.loads(kept.payload) == bodies[-1], "the last stats stays retained"


def test_the_fleet_table_and_the_exporter_read_the_stats_the_agent_sent_alike(video_run: RecordedRun) -> None:
    """One description of `stats` (agent/transport/stats_schema.py) for the agent and both fleet readers: every
    stats the agent sent reads whole and encodes back to its very bytes (so the description knows each field
    it sent, in order), and the table and the exporter take the same figures from it."""
    messages = video_run.observer.on("stats")
    assert messages
    for message in messages:
        parsed = stats_schema.parse(json.loads(message.payload))
        assert parsed.problems == ()
        assert stats_schema.encode(parsed.stats) == message.payload
        assert parsed.stats.mqtt is not None and parsed.stats.mqtt.outbox_recovered is not None, "MQTT's own figures"
        table, exported = view.parse_stats(message.payload), readings.parse_stats(message.payload)
        assert table is not None and exported.model is not None
        values = exported.values
        assert (table.ts, table.fps, table.cpu_temp_c) == (exported.ts, values["fps"], values.get("cpu_temp_c"))
        assert table.outbox_pending == values["mqtt.outbox_pending"]
        assert (table.model, table.precision, table.sha256) == astuple(exported.model)
        assert table.inference_p50_ms == exported.latency_ms.get("inference", {}).get("p50")
    assert any(view.parse_stats(m.payload).inference_p50_ms for m in messages), "some window saw frames"


def test_status_online_then_stopped_retained(video_run: RecordedRun) -> None:
    status = video_run.observer.on("status")
    assert [m.payload for m in status] == [b"online", b"stopped"]
    assert all(m.qos == 1 for m in status)
    first_detection = video_run.observer.on("detections")[0]
    assert status[0].at <= first_detection.at
    assert video_run.kept["status"].payload == b"stopped" and video_run.kept["status"].retain
    # Only state is retained (settings, presence and the snapshots joined status and stats); never detections or events.
    kept = {m.topic.split("/", 2)[2] for m in video_run.kept.values()}  # the topics below the device's
    assert {"status", "stats"} <= kept <= {"status", "stats", "settings", "presence", "snapshot", "snapshot/clean"}


def test_detections_match_the_video_truth(video_run: RecordedRun, sample_video: tuple[Path, list]) -> None:
    """Frame ids count from 1: frame id n is video frame n - 1. Moderate thresholds: the model is small."""
    truth = sample_video[1]
    by_frame = {body["frame"]: body["detections"] for body in video_run.json("detections")}
    scale = np.array([VIDEO_HW[1], VIDEO_HW[0]] * 2, np.float64)
    mostly_found = true_objects = found_with_class = confident = confident_on_target = 0
    for frame_id in range(1, VIDEO_FRAMES + 1):
        boxes_px, class_ids = truth[frame_id - 1]
        true_boxes = boxes_px / scale
        detections = by_frame.get(frame_id, [])
        found = np.zeros(len(true_boxes), bool)
        found_class = np.zeros(len(true_boxes), bool)
        if detections:
            boxes = np.array([d["box"] for d in detections], np.float64)
            ids = np.array([d["class_id"] for d in detections])
            overlap = box_iou_xyxy(true_boxes, boxes) > 0.5
            found = overlap.any(axis=1)
            found_class = (overlap & (ids[None, :] == class_ids[:, None])).any(axis=1)
            scores = np.array([d["confidence"] for d in detections])
            confident += int((scores >= 0.5).sum())
            confident_on_target += int((overlap.any(axis=0) & (scores >= 0.5)).sum())
        mostly_found += 2 * int(found.sum()) >= len(true_boxes)
        true_objects += len(true_boxes)
        found_with_class += int(found_class.sum())
    assert mostly_found >= 0.6 * VIDEO_FRAMES, f"at least half the shapes found in only {mostly_found} frames"
    assert found_with_class >= 0.35 * true_objects, f"{found_with_class} of {true_objects} found with their class"
    assert confident >= 20 and confident_on_target >= 0.8 * confident, (confident_on_target, confident)


# -- faults and stops ---------------------------------------------------------------------------


@pytest.mark.fault
def test_kill_9_leaves_offline_as_the_last_will(tmp_path, broker, observe, fixture_onnx, sample_video) -> None:
    observer = observe(broker, "e2e-will")
    with looping_agent(tmp_path, broker, "e2e-will", fixture_onnx, sample_video[0], mqtt_keepalive=5) as agent:
        observer.wait_count("detections", 1, timeout=30)
        assert [m.payload for m in observer.on("status")] == [b"online"]
        agent.kill()
    killed = time.monotonic()
    # The broker sends the will when it notices the connection is gone: at once for a closed socket,
    # at the latest after 1.5 keepalives (5 s here).
    observer.wait_for("offline", lambda: [m.payload for m in observer.on("status")][-1:] == [b"offline"], 7.5)
    assert time.monotonic() - killed <= 7.5
    kept = retained(broker.host, broker.port, "e2e-will", ("status",))
    assert kept["status"].payload == b"offline"


def test_sigterm_stops_within_5_s_and_ends_open_presences(
    tmp_path, broker, observe, fixture_onnx, sample_video, model_identity
) -> None:
    observer = observe(broker, "e2e-term")
    started = time.time()
    with looping_agent(tmp_path, broker, "e2e-term", fixture_onnx, sample_video[0]) as agent:
        observer.wait_for("an open presence", lambda: open_presences(observer.json("events")), timeout=30)
        code, took = agent.stop(timeout=5.0)
        assert code == 0, agent.describe()
        assert took < 5.0
        assert "SIGTERM received: stopping" in agent.stderr
    observer.wait_for("stopped", lambda: [m.payload for m in observer.on("status")][-1:] == [b"stopped"], 5)
    observer.wait_for("every presence ended", lambda: not open_presences(observer.json("events")), 5)
    check_events(observer.json("events"), (started, time.time()))
    final = observer.json("stats")[-1]
    check_stats(final, model_identity)
    assert final["frames"]["processed"] >= 1
    kept = retained(broker.host, broker.port, "e2e-term", ("status", "stats"))
    assert kept["status"].payload == b"stopped" and json.loads(kept["stats"].payload) == final


@pytest.fixture
def gated_broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_gated_broker(tmp_path)
    yield running
    running.stop()


@pytest.mark.fault
def test_events_survive_a_broker_outage_in_order(
    tmp_path, gated_broker, observe, fixture_onnx, sample_video, model_identity
) -> None:
    broker = gated_broker
    state = tmp_path / "state"
    observer = observe(broker, "e2e-outage", username=OBSERVER_USER, password=OBSERVER_PASSWORD)
    started = time.time()
    with looping_agent(
        tmp_path, broker, "e2e-outage", fixture_onnx, sample_video[0], state_dir=state, events_end_after=0.3
    ) as agent:
        observer.wait_count("events", 3, timeout=30)
        broker.stop()
        outage_began = time.time()
        wait_until(
            "events stored while the broker is away",
            lambda: len([e for e in outbox_events(state) if e["ts"] >= outage_began]) >= 3,
            15,
        )
        time.sleep(max(0.0, outage_began + 3.0 - time.time()))  # a few failed reconnects, at least
        held = [e["seq"] for e in outbox_events(state)]
        set_anonymous(broker, False)
        broker.start()
        observer.wait_subscribed(2, timeout=10)
        set_anonymous(broker, True)
        outage_ended = time.time()
        observer.wait_for(
            "the events held during the outage",
            lambda: set(held) <= {e["seq"] for e in observer.json("events")},
            timeout=15,
        )
        observer.wait_for(
            "stats after the reconnect",
            lambda: any(s["mqtt"]["reconnects"] >= 1 for s in observer.json("stats")),
            timeout=5,
        )
        assert agent.running, "a broker outage never stops the agent"
        assert "disconnected from" in agent.stderr and "cannot reach" in agent.stderr
        code, _ = agent.stop(timeout=5.0)
        assert code == 0, agent.describe()
    observer.wait_for("every presence ended", lambda: not open_presences(observer.json("events")), 5)
    events = distinct_events(observer.on("events"), outage_began)
    check_events(events, (started, time.time()))
    during = [e for e in events if outage_began <= e["ts"] <= outage_ended]
    assert len(during) >= 3, "events that happened while the broker was away arrived after it came back"
    assert outbox_events(state) == [], "everything was acknowledged before the clean stop"
    check_stats(observer.json("stats")[-1], model_identity)


@pytest.mark.fault
def test_outbox_survives_kill_9_and_seq_continues(
    tmp_path, broker, observe, fixture_onnx, sample_video, frames_folder
) -> None:
    state = tmp_path / "state"
    observer = observe(broker, "e2e-crash")
    started = time.time()
    with looping_agent(
        tmp_path, broker, "e2e-crash", fixture_onnx, sample_video[0], state_dir=state, events_end_after=0.3
    ) as agent:
        observer.wait_count("events", 2, timeout=30)
        broker.stop()
        outage_began = time.time()
        wait_until("events stored while the broker is away", lambda: len(outbox_events(state)) >= 3, 15)
        agent.kill()
    pending = outbox_events(state)
    delivered = distinct_events(observer.on("events"), outage_began)
    assert [e["seq"] for e in pending] == list(range(pending[0]["seq"], pending[0]["seq"] + len(pending)))
    assert pending[0]["seq"] <= delivered[-1]["seq"] + 1, "no event lost between the last delivered and the stored"

    broker.start()
    observer.wait_subscribed(2, timeout=10)  # the observer is back before the agent replays
    restarted = time.time()
    args = ["run", "--source", str(frames_folder), "--model", str(fixture_onnx)]
    result = run_agent(
        [*args, *broker_args(broker.host, broker.port, "e2e-crash")], agent_env(state), tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    observer.wait_for("stopped", lambda: [m.payload for m in observer.on("status")][-1:] == [b"stopped"], 5)
    observer.wait_for(
        "every presence of the second run ended",
        lambda: not open_presences([m.json() for m in observer.on("events") if m.at >= restarted]),
        5,
    )
    after = [m.json() for m in observer.on("events") if m.at >= restarted]
    assert after[: len(pending)] == pending, "what the killed agent stored goes out first, in order"
    second_run = after[len(pending) :]
    assert second_run, "the folder's shapes started presences"
    check_events(second_run, (restarted, time.time()), first_seq=pending[-1]["seq"] + 1)
    events = distinct_events(observer.on("events"), outage_began)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq never repeats, never skips"
    # kill -9 ends nothing: the killed run's presences stay open, the next run starts its own.
    killed_run = [e for e in events if e["seq"] <= pending[-1]["seq"]]
    check_events(killed_run, (started, restarted), all_ended=False)
    assert outbox_events(state) == []


# -- check ------------------------------------------------------------------------------------


def toml_text(config: dict[str, dict[str, object]]) -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return str(v) if isinstance(v, int | float) else json.dumps(str(v))

    return "".join(f"[{s}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items()) for s, keys in config.items())


def write_bundle(root: Path, onnx: Path) -> Path:
    """A bundle as yolo-edge-convert writes it, FP32 only (enough for the agent's verification)."""
    root.mkdir()
    model = root / "model.fp32.onnx"
    shutil.copyfile(onnx, model)
    data = model.read_bytes()
    manifest = {
        "format": "yolo-edge-bundle",
        "version": 1,
        "model_name": "shapes",
        "files": {"fp32": {"path": model.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
        "names": {str(k): v for k, v in NAMES.items()},
        "imgsz": [320, 320],
        "head": "classic",
        "preprocess": {"letterbox": True, "pad_value": 114, "rgb": True, "scale": 1 / 255},
        "deployable": False,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def check_config(tmp_path: Path, broker: Broker, source: Path, model: Path) -> dict[str, dict[str, object]]:
    return {
        "source": {"uri": str(source)},
        "model": {"path": str(model)},
        "mqtt": {"host": broker.host, "port": broker.port, "device_id": "e2e-check"},
        "agent": {"state_dir": str(tmp_path / "state")},
    }


def run_check(tmp_path: Path, config: dict[str, dict[str, object]], *flags: str) -> subprocess.CompletedProcess:
    path = tmp_path / "agent.toml"
    path.write_text(toml_text(config))
    return run_agent(["check", "--config", str(path), *flags], agent_env(tmp_path / "state"), tmp_path, timeout=60)


@pytest.mark.parametrize("config_file", ["written", "example"])
def test_check_good_config(tmp_path, broker, fixture_onnx, sample_video, config_file: str) -> None:
    bundle = write_bundle(tmp_path / "bundle", fixture_onnx)
    if config_file == "written":
        result = run_check(tmp_path, check_config(tmp_path, broker, sample_video[0], bundle))
    else:  # the shipped example, with the flags a user would add
        flags = [
            "--source",
            str(sample_video[0]),
            "--model",
            str(bundle),
            *broker_args(broker.host, broker.port, "e2e-check"),
        ]
        example = ROOT / "systemd" / "agent.example.toml"
        result = run_agent(["check", "--config", str(example), *flags], agent_env(tmp_path / "state"), tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("config: ok") for line in lines), result.stdout
    assert f"source: ok (video file {sample_video[0]}, first frame received)" in lines
    assert any(line.startswith("model: ok (shapes fp32, sha256 verified") for line in lines), result.stdout
    assert f"broker: ok ({broker.host}:{broker.port})" in lines
    assert "topics: yolo-edge/e2e-check/{status,detections,events,stats}" in lines
    assert "error" not in result.stderr


def corrupt_bundle(tmp_path: Path, onnx: Path) -> Path:
    bundle = write_bundle(tmp_path / "bundle", onnx)
    model = bundle / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content: only the sha256 can tell
    model.write_bytes(bytes(data))
    return bundle


def junk_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "junk.onnx"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


# (name, change to the good config, text the error line must hold)
CHECK_ERRORS: list[tuple[str, Callable[[dict, Path, Path], None], Callable[[Path], str]]] = [
    ("port out of range", lambda c, t, m: c["mqtt"].update(port=70000), lambda t: "mqtt.port: 70000 is not allowed"),
    ("unknown key", lambda c, t, m: c["mqtt"].update(hostname="x"), lambda t: "unknown key mqtt.hostname"),
    (
        "missing model",
        lambda c, t, m: c["model"].update(path=str(t / "nowhere" / "m.onnx")),
        lambda t: f"model.path: '{t / 'nowhere' / 'm.onnx'}' does not exist",
    ),
    (
        "junk onnx",
        lambda c, t, m: c["model"].update(path=str(junk_onnx(t))),
        lambda t: f"cannot load model {t / 'junk.onnx'}",
    ),
    (
        "bundle sha256",
        lambda c, t, m: c["model"].update(path=str(corrupt_bundle(t, m))),
        lambda t: f"{t / 'bundle' / 'model.fp32.onnx'} does not match its sha256",
    ),
    (
        "unreachable broker",
        lambda c, t, m: c["mqtt"].update(port=free_port()),
        lambda t: "broker error: cannot connect to 127.0.0.1:",
    ),
    (
        "missing camera",
        lambda c, t, m: c["source"].update(uri="/dev/video57"),
        lambda t: "camera /dev/video57: no frame within",
    ),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CHECK_ERRORS], ids=[c[0] for c in CHECK_ERRORS])
def test_check_bad_config_gives_one_line_and_exit_2(
    tmp_path, broker, fixture_onnx, sample_video, change, expected
) -> None:
    config = check_config(tmp_path, broker, sample_video[0], fixture_onnx)
    change(config, tmp_path, fixture_onnx)
    result = run_check(tmp_path, config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("yolo-edge-agent:")]
    assert len(errors) == 1, result.stderr
    assert expected(tmp_path) in errors[0], errors[0]
    assert "broker: ok" not in result.stdout
    assert "Traceback" not in result.stderr


# -- sources ----------------------------------------------------------------------------------


def test_image_folder_source(tmp_path, broker, fixture_onnx, frames_folder, model_identity) -> None:
    args = ["run", "--source", str(frames_folder), "--model", str(fixture_onnx)]
    run = record_run(broker, "e2e-folder", args, agent_env(tmp_path / "state"), tmp_path)
    assert f"source ended after {len(FOLDER_INDICES)} frames" in run.result.stderr
    final = run.json("stats")[-1]
    assert final["frames"]["processed"] == len(FOLDER_INDICES) and final["source"]["kind"] == "folder"
    detections = run.json("detections")
    assert len(detections) >= len(FOLDER_INDICES) - 2
    for body in detections:
        check_detections(body, model_identity, run.window, VIDEO_HW)
    assert {b["frame"] for b in detections} <= set(range(1, len(FOLDER_INDICES) + 1))
    check_events(run.json("events"), run.window, last_frame=len(FOLDER_INDICES))


def test_mjpeg_http_stream_source(tmp_path, broker, fixture_onnx, sample_video, model_identity) -> None:
    frames = video_frames(sample_video[0])
    server = MjpegServer([cv2.imencode(".jpg", frames[i])[1].tobytes() for i in range(30, 40)], fps=10).start()
    try:
        args = ["run", "--source", server.url, "--model", str(fixture_onnx), "--max-frames", "8"]
        run = record_run(broker, "e2e-stream", args, agent_env(tmp_path / "state"), tmp_path)
    finally:
        server.stop()
    final = run.json("stats")[-1]
    assert final["frames"]["processed"] == 8 and final["source"]["kind"] == "stream"
    detections = run.json("detections")
    assert len(detections) >= 4, "frames 30-39 of the video hold four shapes"
    for body in detections:
        check_detections(body, model_identity, run.window, VIDEO_HW)
    check_events(run.json("events"), run.window)


def test_missing_camera_keeps_running_and_reports_it(tmp_path, broker, observe, fixture_onnx) -> None:
    observer = observe(broker, "e2e-nocam")
    args = [
        "run",
        "--source",
        "/dev/video57",
        "--model",
        str(fixture_onnx),
        *broker_args(broker.host, broker.port, "e2e-nocam"),
    ]
    with AgentProcess(args, agent_env(tmp_path / "state", stats_interval=1), tmp_path) as agent:
        observer.wait_count("stats", 2, timeout=20)
        assert agent.running, "a camera that is not there yet is waited for, not an exit"
        stats = observer.json("stats")[-1]
        assert stats["source"]["kind"] == "camera" and stats["source"]["connected"] is False
        assert "/dev/video57" in stats["source"]["last_error"]
        assert stats["frames"]["processed"] == 0
        assert observer.on("detections") == [] and observer.on("events") == []
        code, took = agent.stop(timeout=5.0)
        assert code == 0 and took < 5.0, agent.describe()
    observer.wait_for("stopped", lambda: [m.payload for m in observer.on("status")] == [b"online", b"stopped"], 5)


# -- dry run, imports, an end-to-end head ---------------------------------------------------------


def test_dry_run_prints_the_same_payloads_as_json_lines(
    tmp_path, fixture_onnx, sample_video, model_identity, video_run: RecordedRun
) -> None:
    nobody = free_port()  # nothing listens there: a dry run must not need a broker
    args = [
        "run",
        "--dry-run",
        "--source",
        str(sample_video[0]),
        "--model",
        str(fixture_onnx),
        "--max-frames",
        "12",
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(nobody),
        "--device-id",
        "e2e-dry",
    ]
    started = time.time()
    result = run_agent(args, agent_env(tmp_path / "state"), tmp_path)
    window = (started, time.time())
    assert result.returncode == 0, result.stderr
    assert "connected to" not in result.stderr and "cannot reach" not in result.stderr
    lines = list(iter_json_lines(result.stdout))
    assert all(set(line) == {"topic", "qos", "retain", "payload"} for line in lines)
    prefix = "yolo-edge/e2e-dry/"
    assert all(line["topic"].startswith(prefix) for line in lines)
    by_topic: dict[str, list] = {}
    for line in lines:
        by_topic.setdefault(line["topic"].removeprefix(prefix), []).append(line)
    assert lines[0] == {"topic": prefix + "status", "qos": 1, "retain": True, "payload": "online"}
    assert lines[-1] == {"topic": prefix + "status", "qos": 1, "retain": True, "payload": "stopped"}
    detections = [line["payload"] for line in by_topic["detections"]]
    for body in detections:
        check_detections(body, model_identity, window, VIDEO_HW)
    assert all(line["qos"] == 0 and not line["retain"] for line in by_topic["detections"])
    check_events([line["payload"] for line in by_topic.get("events", [])], window, last_frame=12)
    assert all(line["qos"] == 1 for line in by_topic.get("events", []))
    stats = by_topic["stats"][-1]
    assert stats["retain"] and stats["qos"] == 0
    check_stats(stats["payload"], model_identity)
    assert stats["payload"]["frames"]["processed"] == 12
    # The same frames through MQTT gave the same detections.
    over_mqtt = {b["frame"]: b["detections"] for b in video_run.json("detections") if b["frame"] <= 12}
    assert {b["frame"] for b in detections} == set(over_mqtt)
    for body in detections:
        for dry, published in zip(body["detections"], over_mqtt[body["frame"]], strict=True):
            assert dry["label"] == published["label"]
            assert dry["box"] == pytest.approx(published["box"], abs=2e-3)
            assert dry["confidence"] == pytest.approx(published["confidence"], abs=2e-3)


IMPORT_PROBE = """
import json, sys
import agent.cli, agent.runtime.loop, agent.transport.mqtt, agent.pipeline.sources, agent.pipeline.detector
imported = sorted(sys.modules)
code = agent.cli.main(["run", "--dry-run", "--source", sys.argv[1], "--model", sys.argv[2], "--max-frames", "2"])
with open(sys.argv[3], "w") as out:
    json.dump({"imported": imported, "after_run": sorted(sys.modules), "code": code}, out)
"""


def test_the_agent_never_imports_torch_ultralytics_or_onnx(tmp_path, fixture_onnx, frames_folder) -> None:
    report = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(frames_folder), str(fixture_onnx), str(report)],
        env=agent_env(tmp_path / "state"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(report.read_text())
    assert found["code"] == 0
    heavy = {"torch", "torchvision", "ultralytics", "onnx"}
    for when in ("imported", "after_run"):
        assert not [m for m in found[when] if m.split(".")[0] in heavy], when
    assert "onnxruntime" in found["after_run"]


@pytest.mark.slow
def test_end2end_head_model_runs_and_publishes_empty_frames(tmp_path, broker, tmp_path_factory, frames_folder) -> None:
    from ultralytics import YOLO

    from converter.export import export_model

    weights = tmp_path_factory.mktemp("yolo26n") / "yolo26n.pt"
    YOLO("yolo26n.yaml").save(str(weights))  # untrained: it finds next to nothing
    exported = export_model(weights, tmp_path_factory.mktemp("yolo26n-onnx"), imgsz=160, head="end2end")
    assert exported.head == "end2end"
    args = ["run", "--source", str(frames_folder), "--model", str(exported.onnx_path), "--max-frames", "4"]
    run = record_run(broker, "e2e-e2e", args, agent_env(tmp_path / "state", mqtt_publish_empty=True), tmp_path)
    assert re.search(r"model loaded: model fp32 \(end2end head, 80 classes", run.result.stderr), run.result.stderr
    detections = run.json("detections")
    assert [b["frame"] for b in detections] == [1, 2, 3, 4], "publish_empty: one message per frame"
    identity = {
        "name": "model",
        "precision": "fp32",
        "sha256": hashlib.sha256(exported.onnx_path.read_bytes()).hexdigest(),
    }
    for body in detections:
        check_detections(body, identity, run.window, VIDEO_HW)
        assert body["detections"] == []
    assert run.json("events") == []
    assert run.json("stats")[-1]["frames"]["processed"] == 4
