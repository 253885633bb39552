"""A small object crossing a 1080p frame, through the real agent on a real broker: the whole frame shrunk
to the fixture model's 256 input makes it a few pixels and it is missed; with `[motion] regions` the
detector runs on a native-resolution crop around its motion and finds it, on its true box."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.scene.tracker import iou_matrix
from benchmarks.fixture.shapes import CLASS_NAMES
from benchmarks.fixture.video import MovingShape, write_planned_video
from tests.agent.agent_process import Observer, agent_env, broker_args, run_agent
from tests.broker import Broker

FPS, FRAMES, HEIGHT, WIDTH = 10.0, 40, 1080, 1920
SQUARE = 1
# About 50 px across (under 1/20 of the frame's height): 7 px in the whole frame at 256, too small for the model.
SMALL = MovingShape(SQUARE, (300.0, 400.0), (25.0, 6.0), 36.0, (240, 240, 240), 0, FRAMES)


@dataclass(frozen=True)
class Run:
    detections: list[dict]
    objects: list[dict]
    stats: list[dict]
    stderr: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path) -> Iterator[tuple[dict[bool, Run], list]]:
    """The same video through the agent with regions off and on, one broker: ({regions: run}, truth)."""
    workdir = tmp_path_factory.mktemp("regions")
    video = workdir / "far.avi"
    truth = write_planned_video(video, [SMALL], FRAMES, FPS, HEIGHT, WIDTH)
    broker = Broker(workdir).start()
    done: dict[bool, Run] = {}
    try:
        for regions in (False, True):
            device = f"e2e-regions-{str(regions).lower()}"
            config = workdir / f"{device}.toml"
            config.write_text(f"[motion]\nregions = {str(regions).lower()}\n\n[snapshot]\ndraw_regions = true\n")
            observer = Observer(broker.host, broker.port, device)
            try:
                args = ["run", "--config", str(config), "--source", str(video), "--model", str(fixture_onnx)]
                args += broker_args(broker.host, broker.port, device)
                result = run_agent(args, agent_env(workdir / device), workdir, timeout=180)
                assert result.returncode == 0, result.stderr[-3000:]
                observer.wait_for(
                    "status stopped", lambda o=observer: b"stopped" in [m.payload for m in o.on("status")], 10
                )
                done[regions] = Run(
                    observer.json("detections"), observer.json("objects"), observer.json("stats"), result.stderr
                )
            finally:
                observer.close()
        yield done, truth
    finally:
        broker.stop()


def found_on_true_box(run: Run, truth: list) -> tuple[int, int]:
    """(detector frames after the first, those where the square was found with IoU >= 0.5 on its true box).
    A detector frame that found nothing sends no `detections`: the stats count them all."""
    found = 0
    for message in run.detections:
        index = message["frame"] - 1  # frame ids count from 1
        if index == 0:
            continue  # the first frame has no background to compare against: the whole frame runs
        boxes = np.array([d["box"] for d in message["detections"] if d["label"] == CLASS_NAMES[SQUARE]], np.float32)
        boxes = boxes.reshape(-1, 4) * [WIDTH, HEIGHT, WIDTH, HEIGHT]
        found += bool(len(boxes)) and float(iou_matrix(boxes, truth[index][0]).max()) >= 0.5
    return run.stats[-1]["frames"]["detected"] - 1, found


def test_the_whole_frame_misses_the_small_object(runs: tuple[dict[bool, Run], list]) -> None:
    done, truth = runs
    frames, found = found_on_true_box(done[False], truth)
    assert frames >= FRAMES // 2, done[False].stderr[-2000:]
    assert found <= frames // 5, f"the premise: found in {found} of {frames} whole frames"
    assert "regions" not in done[False].stats[-1]["frames"]


def test_regions_find_it_on_its_true_box(runs: tuple[dict[bool, Run], list]) -> None:
    done, truth = runs
    frames, found = found_on_true_box(done[True], truth)
    assert frames >= FRAMES // 2 and found >= 0.8 * frames, f"found in {found} of {frames} frames"
    news = [m for m in done[True].objects if m["type"] == "new"]
    assert [m["label"] for m in news] == [CLASS_NAMES[SQUARE]], "one tracked object, the square"


def test_stats_count_the_crops(runs: tuple[dict[bool, Run], list]) -> None:
    done, _ = runs
    counts = done[True].stats[-1]["frames"]
    assert counts["region_frames"] >= FRAMES // 2 and counts["region_frames"] <= counts["detected"]
    assert counts["regions"] >= counts["region_frames"], counts
