"""The frame loop in-process, with a scripted source, a fake detector and a publisher that records:
gating, settings applied between frames, a deployment's switch and roll-back, the final stats at a
clean stop. No subprocess, no broker, no model: what is checked is the loop's own wiring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from agent.control.commands import CommandInbox
from agent.control.deploy.switchover import PROBATION_FRAMES, ModelSwitch
from agent.control.remote_settings import RuntimeSettings
from agent.pipeline.detections import Detections
from agent.pipeline.detector import ModelIdentity
from agent.pipeline.frames import Frame
from agent.pipeline.postprocess import PostprocessSettings
from agent.pipeline.snapshot import SnapshotSettings
from agent.runtime.loop import AgentLoop, LoopHooks, LoopSettings, RemoteControl
from agent.runtime.reporter import Reporter, ReportSettings
from agent.scene.motion import MotionSettings
from agent.scene.scene import Scene, SceneSettings
from agent.system.board import BoardHealth
from agent.transport import topics
from agent.transport.publisher import PublisherHealth, ReplyTo

HW = (120, 160)
BOX = np.array([[60.0, 40.0, 100.0, 80.0]], np.float32)  # where the fake model finds its one object


@dataclass(frozen=True)
class Published:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


@dataclass
class RecordingPublisher:
    """A real Publisher that keeps every message, numbering sequenced ones per topic as the outbox does."""

    messages: list[Published] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.messages.append(Published(topic, payload, qos, retain))

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        seq = self.seqs[topic] = self.seqs.get(topic, 0) + 1
        self.publish(topic, build(seq), qos, retain)
        return seq

    def publish_reply(self, reply_to: ReplyTo, payload: bytes) -> None:
        self.publish(reply_to.topic, payload)

    def health(self) -> PublisherHealth:
        return PublisherHealth(connected=True)

    def close(self, timeout: float = 3.0) -> None:
        pass

    def on(self, topic: str) -> list[dict]:
        return [m.json() for m in self.messages if m.topic == topic]


class FakeDetector:
    """One object at BOX, score 0.5, class 0, kept only while the settings' confidence lets it through.
    fail_on: detect() calls (1-based) that raise, as a broken model would."""

    input_side = 640  # crops are never cut here: the scenes of these tests detect on whole frames

    def __init__(self, name: str, names: dict[int, str] | None = None, fail_on: tuple[int, ...] = ()) -> None:
        self.identity = ModelIdentity(name, "fp32", name * 8)
        self.names = names or {0: "circle", 1: "square"}
        self.settings = PostprocessSettings()
        self.fail_on = fail_on
        self.seen: list[int] = []  # the frames it ran on, by their pixel stamp

    def apply_settings(self, settings: PostprocessSettings) -> None:
        self.settings = settings

    def detect(self, image: np.ndarray) -> tuple[Detections, float, float, float]:
        self.seen.append(int(image[0, 0, 0]))
        if len(self.seen) in self.fail_on:
            raise RuntimeError(f"{self.identity.name} broke on its call {len(self.seen)}")
        if self.settings.confidence > 0.5:
            return Detections.empty(), 0.1, 1.0, 0.1
        return Detections(BOX.copy(), np.array([0.5], np.float32), np.array([0], np.int64)), 0.1, 1.0, 0.1


@dataclass
class ScriptedSource:
    """Frames made by `image(n)` for n = 1..count, stamped with n in pixel (0, 0); as frame n is read,
    `during[n]` runs (a command arriving then is taken before frame n + 1). Ends after the last one."""

    count: int
    image: Callable[[int], np.ndarray] = lambda n: np.full((*HW, 3), 50, np.uint8)
    during: dict[int, Callable[[], None]] = field(default_factory=dict)
    ended: bool = False
    _next: int = 1

    def read(self, timeout: float) -> Frame | None:
        if self._next > self.count:
            self.ended = True
            return None
        n, self._next = self._next, self._next + 1
        if n in self.during:
            self.during[n]()
        image = self.image(n).copy()
        image[0, 0] = n
        return Frame(image, n, 1_700_000_000.0 + n / 10, time.monotonic())

    def health(self) -> object:
        return None


@dataclass
class ReadyModel:
    detector: FakeDetector


@dataclass
class FakeDeployments:
    """The deployer's side of a switch-over: hands out `ready` once and records what it was told."""

    ready: ReadyModel | None = None
    told: list[str] = field(default_factory=list)
    offered: int = 0

    def offer_frame(self, image: np.ndarray) -> None:
        self.offered += 1

    def take_ready(self) -> ReadyModel | None:
        ready, self.ready = self.ready, None
        return ready

    def switched(self, ready: ReadyModel) -> None:
        self.told.append(f"switched {ready.detector.identity.name}")

    def refused(self, ready: ReadyModel, reason: str) -> None:
        self.told.append(f"refused {ready.detector.identity.name}: {reason}")

    def confirmed(self, ready: ReadyModel) -> None:
        self.told.append(f"confirmed {ready.detector.identity.name}")

    def rolled_back(self, ready: ReadyModel, reason: str, identity: ModelIdentity) -> None:
        self.told.append(f"rolled back {ready.detector.identity.name} to {identity.name}: {reason}")


def make_loop(
    source: ScriptedSource,
    detector: FakeDetector,
    publisher: RecordingPublisher,
    scene: SceneSettings | None = None,
    control: RemoteControl | None = None,
    deployments: FakeDeployments | None = None,
    on_frame: Callable | None = None,
    report: ReportSettings | None = None,
) -> AgentLoop:
    return AgentLoop(
        source,
        ModelSwitch(detector, deployments),  # type: ignore[arg-type]
        Scene(scene or SceneSettings.presence_only(end_after=60.0), detector.names),
        Reporter(publisher, report or ReportSettings(), BoardHealth(refresh_s=60.0)),
        LoopSettings(max_frame_age=60.0, stats_interval=3600.0),
        control=control,
        hooks=LoopHooks(on_frame=on_frame),
    )


def moving_square(still_until: int) -> Callable[[int], np.ndarray]:
    """A grey frame; from frame still_until + 1 on, a white square that moves 8 px a frame."""

    def image(n: int) -> np.ndarray:
        frame = np.full((*HW, 3), 50, np.uint8)
        if n > still_until:
            x = 10 + 8 * (n - still_until)
            frame[40:70, x : x + 30] = 255
        return frame

    return image


def test_still_frames_skip_the_detector_and_moving_ones_run_it() -> None:
    source = ScriptedSource(20, moving_square(still_until=14))
    detector, publisher = FakeDetector("m"), RecordingPublisher()
    gated = SceneSettings(motion=MotionSettings(), tracker=None, end_after=60.0)
    counters = make_loop(source, detector, publisher, scene=gated).run()
    assert counters.processed == 20
    assert 1 in detector.seen and set(range(2, 15)).isdisjoint(detector.seen), detector.seen
    assert set(range(16, 21)) <= set(detector.seen), detector.seen
    frames = publisher.on("stats")[-1]["frames"]
    assert frames["detected"] == len(detector.seen) and frames["motion_skipped"] == 20 - len(detector.seen)
    assert {d["frame"] for d in publisher.on("detections")} == set(detector.seen)


def test_without_gating_every_frame_is_detected_and_stats_carry_no_gate_counts() -> None:
    detector, publisher = FakeDetector("m"), RecordingPublisher()
    make_loop(ScriptedSource(6), detector, publisher).run()
    assert detector.seen == [1, 2, 3, 4, 5, 6]
    assert "detected" not in publisher.on("stats")[-1]["frames"]


def test_a_settings_change_applies_between_two_frames_and_is_answered() -> None:
    publisher, detector = RecordingPublisher(), FakeDetector("m")
    answers: list[dict] = []
    inbox = CommandInbox(detector.names, lambda payload: answers.append(json.loads(payload)))
    source = ScriptedSource(6, during={4: lambda: inbox.on_set(b'{"confidence": 0.6, "request_id": "r1"}')})
    make_loop(source, detector, publisher, control=RemoteControl(RuntimeSettings(), inbox)).run()
    # Frames 1-4 ran with the old threshold (one detection each), 5-6 with the new one (none).
    assert [d["frame"] for d in publisher.on("detections")] == [1, 2, 3, 4]
    assert [s["confidence"] for s in publisher.on("settings")] == [0.25, 0.6]
    (answer,) = answers
    assert answer["request_id"] == "r1" and answer["settings"]["confidence"] == 0.6


def test_a_deployed_model_is_switched_to_between_frames_and_confirmed_after_its_probation() -> None:
    old, new = FakeDetector("old"), FakeDetector("new")
    deployments = FakeDeployments()
    source = ScriptedSource(12, during={3: lambda: setattr(deployments, "ready", ReadyModel(new))})
    publisher = RecordingPublisher()
    make_loop(source, old, publisher, deployments=deployments).run()
    assert old.seen == [1, 2, 3] and new.seen == list(range(4, 13))
    assert deployments.told == ["switched new", "confirmed new"]
    assert len(new.seen) > PROBATION_FRAMES and deployments.offered == 12
    assert publisher.on("stats")[-1]["model"]["name"] == "new"


def test_a_deployed_model_that_fails_is_rolled_back_on_the_same_frame() -> None:
    old, new = FakeDetector("old"), FakeDetector("new", fail_on=(2,))
    deployments = FakeDeployments()
    source = ScriptedSource(8, during={3: lambda: setattr(deployments, "ready", ReadyModel(new))})
    publisher = RecordingPublisher()
    make_loop(source, old, publisher, deployments=deployments).run()
    assert new.seen == [4, 5]  # it broke on frame 5, its second
    assert old.seen == [1, 2, 3, 5, 6, 7, 8]  # and the old model detected that same frame
    assert deployments.told[0] == "switched new"
    assert deployments.told[1].startswith("rolled back new to old: the new model failed in the frame loop: new broke")
    assert len(deployments.told) == 2
    assert [d["frame"] for d in publisher.on("detections")] == list(range(1, 9))


def test_a_model_with_other_labels_ends_what_the_old_one_saw_first() -> None:
    old, new = FakeDetector("old"), FakeDetector("new", names={0: "cat"})
    deployments = FakeDeployments()
    source = ScriptedSource(5, during={3: lambda: setattr(deployments, "ready", ReadyModel(new))})
    publisher = RecordingPublisher()
    make_loop(source, old, publisher, deployments=deployments).run()
    events = [(e["type"], e["label"], e["frame"]) for e in publisher.on("events")]
    assert events == [("start", "circle", 1), ("end", "circle", 3), ("start", "cat", 4), ("end", "cat", 5)]
    assert [e["seq"] for e in publisher.on("events")] == [1, 2, 3, 4]


@pytest.mark.parametrize("stopped_by", ["source end", "stop event"])
def test_a_clean_stop_ends_every_presence_and_publishes_final_stats(stopped_by: str) -> None:
    publisher, detector = RecordingPublisher(), FakeDetector("m")
    results: list = []
    source = ScriptedSource(5 if stopped_by == "source end" else 50)
    loop = make_loop(source, detector, publisher, on_frame=results.append)
    if stopped_by == "stop event":
        source.during[5] = loop.stop.set  # frame 5 is still processed, then the loop ends
    loop.run()
    assert [e["type"] for e in publisher.on("events")] == ["start", "end"]
    assert publisher.on("presence")[-1]["present"] == {}
    final = publisher.messages[-1]
    assert final.topic == "stats" and final.retain
    assert final.json()["frames"]["processed"] == 5 == len(results)
    assert results[-1].timings.publish >= 0 and len(results[-1].detections) == 1


def test_a_presence_start_publishes_the_snapshot_drawn_and_clean_from_one_frame() -> None:
    """The drawn JPEG (boxes, labels, zones: Home Assistant's picture) and the same frame with nothing
    drawn, for a page that draws its own live layers over it (the dashboard): both retained."""
    import cv2

    publisher = RecordingPublisher()
    report = ReportSettings(snapshot=SnapshotSettings(quality=100))
    make_loop(ScriptedSource(3), FakeDetector("m"), publisher, report=report).run()
    drawn = [m for m in publisher.messages if m.topic == topics.SNAPSHOT]
    clean = [m for m in publisher.messages if m.topic == topics.SNAPSHOT_CLEAN]
    assert len(drawn) == len(clean) == 1 and drawn[0].retain and clean[0].retain  # frame 1 started the presence
    frame = np.full((*HW, 3), 50, np.uint8)
    frame[0, 0] = 1
    pictures = [cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR) for m in (drawn[0], clean[0])]
    x1, y1, _, y2 = BOX[0].astype(int)
    edge = (slice(y1 + 5, y2 - 5), x1)  # the box's left edge, below where its tag could be
    assert np.abs(pictures[1].astype(np.int16) - frame)[edge].max() < 16, "the clean one: the frame alone"
    assert np.abs(pictures[0].astype(np.int16) - frame)[edge].max() > 60, "the drawn one: its box"
