"""The scene with motion regions on, frame by frame: tracked objects the crops leave out are looked at
within refresh_s by a whole frame, and a track whose predicted box left the frame ends as usual."""

from __future__ import annotations

import numpy as np

from agent.pipeline.crops import Crop, RegionPlan
from agent.pipeline.detections import Detections
from agent.scene.scene import Scene, SceneSettings
from agent.scene.tracker import TrackerSettings

HW = (1080, 1920)
NAMES = {0: "circle", 1: "square"}


def textured() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(60, 180, size=(HW[0] // 20, HW[1] // 20, 1), dtype=np.uint8)
    return np.repeat(np.repeat(np.repeat(base, 20, 0), 20, 1), 3, 2)


def one(box: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array([box], np.float32), np.array([0.9], np.float32), np.array([0]))


def test_a_tracked_object_left_out_by_max_regions_is_looked_at_within_refresh_s() -> None:
    scene = Scene(SceneSettings(max_regions=1, refresh_s=2.0), NAMES)
    background, parked = textured(), (200.0, 700.0, 240.0, 740.0)
    for n in range(3):  # the parked object gets its track on whole frames
        scene.after_detect(one(parked), 1000.0 + n / 10, n + 1, HW, still=False)
    plans = []
    for n in range(3, 60):
        frame = background.copy()
        x = 1000 + 15 * n  # something small moving far from the parked object, every frame
        frame[300:340, x : x + 40] = 250
        gate = scene.gate(frame, n / 10, 320)
        assert gate.detect
        plans.append(gate.plan)
        found = one((x, 300.0, x + 40.0, 340.0)) if not gate.plan.whole else one(parked)
        scene.after_detect(found, 1000.0 + n / 10, n + 1, HW, gate.still, gate.plan)
        assert scene.tracks["active"] >= 1, f"the parked object's track ended at frame {n}"
    wholes = [n + 3 for n, plan in enumerate(plans) if plan.whole]
    assert wholes[0] == 3, "the motion detector's first frame has no background yet: the whole frame runs"
    assert len(wholes) >= 3, f"then again once the parked object is overdue: {wholes}"
    assert (np.diff(wholes) <= 2.0 * 10 + 2).all(), f"at least every refresh_s (20 frames): {wholes}"
    assert sum(len(p.crops) for p in plans if not p.whole) >= 40, "the moving one is on a crop in between"


def test_a_track_whose_predicted_box_left_the_frame_ends() -> None:
    scene = Scene(SceneSettings(max_regions=3, tracker=TrackerSettings(max_lost_s=1.0)), NAMES)
    for n in range(5):  # leaving through the right edge at 20 px a frame
        x = 1780.0 + 20 * n
        scene.after_detect(one((x, 500.0, x + 80.0, 580.0)), 1000.0 + n / 10, n + 1, HW, still=False)
    elsewhere = RegionPlan((Crop(0, 0, 320),), whole=False)  # motion on the other side of the frame
    ended = []
    for n in range(5, 40):
        step = scene.after_detect(Detections.empty(), 1000.0 + n / 10, n + 1, HW, False, elsewhere)
        ended += [m for m in step.objects if m.type == "end"]
    assert len(ended) == 1 and scene.tracks["active"] == 0
