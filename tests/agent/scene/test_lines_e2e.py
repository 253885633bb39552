"""A circle walks down the frame across two lines (one drawn each way) and into a zone, through the real
agent on a real broker, twice with the same state directory: one `cross` per line in the right
direction, the counts in the retained `lines`, kept across the restart, and the dwell on `end` within
a frame interval of the truth read off the trajectory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.fixture.shapes import CLASS_NAMES
from benchmarks.fixture.video import MovingShape, write_planned_video
from tests.agent.agent_process import Observer, agent_env, broker_args, retained, run_agent
from tests.broker import Broker

DEVICE = "e2e-lines"
FPS, FRAMES, HEIGHT, WIDTH = 15.0, 80, 480, 640
LINE_Y = 0.55
# The circle's box is 100 px tall; its bottom centre goes from y = 110 to 446 (0.23 to 0.93 of the frame).
WALKER = MovingShape(0, (320.0, 60.0), (0.0, 4.8), 50.0, (240, 240, 240), 0, 70)
CONFIG = f"""
[lines.gate]
points = [[0.1, {LINE_Y}], [0.9, {LINE_Y}]]

[lines.back]
points = [[0.9, {LINE_Y}], [0.1, {LINE_Y}]]

[zones.lower]
polygon = [[0.0, {LINE_Y}], [1.0, {LINE_Y}], [1.0, 1.0], [0.0, 1.0]]
inertia = 2
"""


@dataclass(frozen=True)
class Run:
    objects: list[dict]
    detections: list[dict]
    lines: dict
    stderr: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, fixture_onnx: Path) -> Iterator[tuple[Run, Run, list]]:
    """The same video through the agent twice, one state directory: (first run, second run, truth)."""
    workdir = tmp_path_factory.mktemp("lines")
    video = workdir / "walk.avi"
    truth = write_planned_video(video, [WALKER], FRAMES, FPS, HEIGHT, WIDTH)
    config = workdir / "agent.toml"
    config.write_text(CONFIG)
    broker = Broker(workdir).start()
    state = workdir / "state"
    done = []
    try:
        for _ in range(2):
            observer = Observer(broker.host, broker.port, DEVICE)
            try:
                args = ["run", "--config", str(config), "--source", str(video), "--model", str(fixture_onnx)]
                args += broker_args(broker.host, broker.port, DEVICE)
                result = run_agent(args, agent_env(state), workdir, timeout=120)
                assert result.returncode == 0, result.stderr[-3000:]
                observer.wait_for(
                    "status stopped", lambda o=observer: b"stopped" in [m.payload for m in o.on("status")], 10
                )
                kept = retained(broker.host, broker.port, DEVICE, ("lines",))
                done.append(
                    Run(observer.json("objects"), observer.json("detections"), kept["lines"].json(), result.stderr)
                )
            finally:
                observer.close()
        yield done[0], done[1], truth
    finally:
        broker.stop()


def test_one_crossing_per_line_in_its_direction(runs: tuple[Run, Run, list]) -> None:
    first, _, _ = runs
    crossings = [(m["line"], m["direction"], m["label"]) for m in first.objects if m["type"] == "cross"]
    assert sorted(crossings) == [("back", "out", CLASS_NAMES[0]), ("gate", "in", CLASS_NAMES[0])], first.stderr[-2000:]
    seqs = [m["seq"] for m in first.objects]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "cross events are numbered with the other objects"
    (walker,) = {m["id"] for m in first.objects if m["type"] == "new"}
    assert {m["id"] for m in first.objects if m["type"] == "cross"} == {walker}


def test_the_retained_counts_and_their_restart(runs: tuple[Run, Run, list]) -> None:
    first, second, _ = runs
    label = CLASS_NAMES[0]
    assert first.lines["lines"] == {"gate": {"in": {label: 1}, "out": {}}, "back": {"in": {}, "out": {label: 1}}}
    assert first.lines["points"]["gate"] == [[0.1, LINE_Y], [0.9, LINE_Y]]
    # The second run starts from the counts the first one saved, and adds its own crossing.
    assert second.lines["lines"] == {"gate": {"in": {label: 2}, "out": {}}, "back": {"in": {}, "out": {label: 2}}}
    assert second.lines["since"] == first.lines["since"]


def test_the_dwell_on_end_is_the_time_in_the_zone_within_a_frame(runs: tuple[Run, Run, list]) -> None:
    first, _, truth = runs
    (end,) = [m for m in first.objects if m["type"] == "end"]
    # Truth: the frames whose true bottom centre stands in the zone, timed by the agent's own frame stamps.
    inside = [n for n, (boxes, _) in enumerate(truth) if len(boxes) and boxes[0][3] >= LINE_Y * HEIGHT]
    stamps = {d["frame"]: d["ts"] for d in first.detections}  # frame ids count from 1
    first_in, last_seen = inside[0] + 1, inside[-1] + 1
    assert first_in in stamps and last_seen in stamps, "the detections of the boundary frames are missing"
    expected = stamps[last_seen] - stamps[first_in]
    interval = max(stamps[first_in + 1] - stamps[first_in], stamps[last_seen] - stamps[last_seen - 1])
    assert end["dwell_s"]["lower"] == pytest.approx(expected, abs=interval + 0.01)
    updates = [m for m in first.objects if m["type"] == "update" and "lower" in m["dwell_s"]]
    assert all(u["dwell_s"]["lower"] <= end["dwell_s"]["lower"] for u in updates)
