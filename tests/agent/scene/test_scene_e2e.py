"""The agent with motion gating, tracking and a zone, on a real broker: what a subscriber sees.

The video is the sample video with a still stretch in the middle (one frame held for STILL frames),
so the motion gate has frames to skip, and the tracks must come through them unaged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from tests.agent.agent_process import Message, Observer, agent_env, broker_args, retained, run_agent
from tests.broker import Broker

DEVICE = "e2e-scene"
STILL = 40
ZONE = """
[zones.right_half]
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
inertia = 2
"""


def video_with_a_still_stretch(source: Path, out: Path) -> int:
    capture = cv2.VideoCapture(str(source))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    held = frames[:45] + [frames[45]] * STILL + frames[46:]
    h, w = held[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for frame in held:
        writer.write(frame)
    writer.release()
    return len(held)


@pytest.fixture(scope="module")
def scene_run(
    tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path, sample_video: tuple[Path, list]
) -> Iterator[tuple[Observer, dict[str, Message], int, str]]:
    workdir = tmp_path_factory.mktemp("scene-run")
    video = workdir / "still.avi"
    frames = video_with_a_still_stretch(sample_video[0], video)
    config = workdir / "agent.toml"
    config.write_text(ZONE)
    broker = Broker(workdir).start()
    observer = Observer(broker.host, broker.port, DEVICE)
    try:
        args = ["run", "--config", str(config), "--source", str(video), "--model", str(fixture_onnx)]
        args += broker_args(broker.host, broker.port, DEVICE)
        result = run_agent(args, agent_env(workdir / "state", stats_interval=1), workdir, timeout=120)
        assert result.returncode == 0, result.stderr
        observer.wait_for("status stopped", lambda: b"stopped" in [m.payload for m in observer.on("status")], 5)
        kept = retained(broker.host, broker.port, DEVICE, ("zones", "stats"))
        yield observer, kept, frames, result.stderr
    finally:
        observer.close()
        broker.stop()


def test_objects_are_numbered_each_new_then_end_and_all_end_at_the_stop(scene_run) -> None:  # type: ignore[no-untyped-def]
    observer, _, _, stderr = scene_run
    objects = observer.json("objects")
    assert objects, f"no objects published: {stderr[-2000:]}"
    seqs = [o["seq"] for o in objects]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "objects have a seq of their own, without gaps"
    first_type: dict[str, str] = {}
    ended: set[str] = set()
    for message in objects:
        first_type.setdefault(message["id"], message["type"])
        assert message["id"] not in ended, f"a message about {message['id']} after its end"
        assert min(message["box"]) >= 0 and max(message["box"]) <= 1
        if message["type"] == "end":
            assert message["end_ts"] is not None and message["end_ts"] <= message["ts"]
            ended.add(message["id"])
    assert set(first_type.values()) == {"new"}, first_type
    assert ended == set(first_type), "every object ends by the clean stop"


def test_detections_carry_the_track_ids_the_objects_use(scene_run) -> None:  # type: ignore[no-untyped-def]
    observer, _, _, _ = scene_run
    ids = {o["id"] for o in observer.json("objects")}
    tracked = [d for body in observer.json("detections") for d in body["detections"] if d["track_id"]]
    assert tracked, "no detection carries a track id"
    assert {d["track_id"] for d in tracked} <= ids
    assert all(isinstance(d["zones"], list) for body in observer.json("detections") for d in body["detections"])


def test_the_zone_is_entered_counted_and_left_empty_at_the_stop(scene_run) -> None:  # type: ignore[no-untyped-def]
    observer, kept, _, _ = scene_run
    entered = [o for o in observer.json("objects") if "right_half" in o["entered_zones"]]
    assert entered, "no object entered the right half of the frame"
    counts = [m["zones"]["right_half"] for m in observer.json("zones")]
    assert any(sum(c.values()) > 0 for c in counts), counts
    assert kept["zones"].json()["zones"] == {"right_half": {}}, "the retained zones after the stop are empty"


def test_still_frames_skip_the_detector_and_age_no_track(scene_run) -> None:  # type: ignore[no-untyped-def]
    observer, kept, frames, _ = scene_run
    final = kept["stats"].json()
    assert final["frames"]["processed"] == frames
    # The running background takes a few dozen frames to absorb where the objects stopped; after that
    # the detector sleeps until the end of the stretch.
    assert final["frames"]["motion_skipped"] >= STILL // 3, final["frames"]
    assert final["frames"]["detected"] + final["frames"]["motion_skipped"] == frames
    assert "motion" in final["latency_ms"] and "tracking" in final["latency_ms"]
    still_from, still_to = 46, 46 + STILL - 1  # frame ids (from 1) of the held frame
    detected_frames = [body["frame"] for body in observer.json("detections")]
    assert not [f for f in detected_frames if still_to - 10 <= f <= still_to], "the detector ran on settled frames"
    # No object ended while the scene stood still: a skipped frame is no evidence that anything left.
    objects = observer.json("objects")
    ends_during = [o for o in objects if o["type"] == "end" and still_from < o["frame"] <= still_to + 1]
    assert ends_during == [], ends_during
