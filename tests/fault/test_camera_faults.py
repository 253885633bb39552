"""A camera that misbehaves under the real frame loop: garbage frames, odd pictures, stalls, unplugging.

Everything but the camera is the agent's own: FrameSource's reader thread and recovery, the
AgentLoop, the fixture model, snapshots, MqttPublisher with its outbox, a real Mosquitto and a
separate subscriber. The camera is a FrameSource backend whose every grab the test scripts,
since no real driver returns a None, a float image or a 5-channel frame on demand.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.pipeline.capture import Backend, Capture, CaptureUnavailable
from agent.pipeline.detector import load_detector
from agent.pipeline.read_watch import MAX_ABANDONED
from agent.pipeline.results import FrameResult
from agent.pipeline.snapshot import SnapshotSettings
from agent.pipeline.sources import MAX_INVALID_IN_A_ROW, FrameSource
from agent.runtime.loop import AgentLoop, LoopHooks, LoopSettings
from agent.runtime.reporter import ReportSettings
from agent.scene.scene import SceneSettings
from agent.transport.connection import MqttSettings
from agent.transport.mqtt import MqttPublisher
from agent.transport.outbox import Outbox
from tests.agent.agent_process import (
    PREFIX,
    AgentProcess,
    MjpegServer,
    Observer,
    agent_env,
    broker_args,
    distinct_events,
    wait_until,
)
from tests.agent.loop_rig import frame_loop
from tests.broker import Broker

DEVICE = "fault-camera"
FRAME_PERIOD_S = 0.04  # the camera's pace when the script has nothing queued
STEP_S = 0.15  # the pause after each scripted picture: long enough for the loop to take it
RECONNECT_MAX_S = 0.5
STATS_INTERVAL_S = 0.5

# What a broken driver or a bug in a capture library can hand over: (retrieve's ok, image).
GARBAGE: list[tuple[str, bool, Any]] = [
    ("none", True, None),
    ("retrieve failed", False, None),
    ("empty", True, np.zeros((0, 0, 3), np.uint8)),
    ("no rows", True, np.zeros((0, 640, 3), np.uint8)),
    ("two channels", True, np.zeros((48, 64, 2), np.uint8)),
    ("five channels", True, np.zeros((48, 64, 5), np.uint8)),
    ("flat", True, np.zeros(48 * 64 * 3, np.uint8)),
    ("batch of one", True, np.zeros((1, 48, 64, 3), np.uint8)),
    ("float", True, np.zeros((48, 64, 3), np.float32)),
    ("int16", True, np.zeros((48, 64, 3), np.int16)),
    ("bool", True, np.zeros((48, 64, 3), bool)),
    ("list", True, [[0, 0, 0]]),
    ("bytes", True, b"\xff\xd8\xff\xe0 not really a jpeg"),
]


def odd_pictures(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Pictures that are unusual but usable, each of its own size so the test can tell which got through."""
    bgra = cv2.cvtColor(cv2.resize(frame, (322, 242)), cv2.COLOR_BGR2BGRA)
    readonly = cv2.resize(frame, (324, 244))
    readonly.flags.writeable = False
    return {
        "gray": cv2.cvtColor(cv2.resize(frame, (320, 240)), cv2.COLOR_BGR2GRAY),
        "gray, one channel": cv2.cvtColor(cv2.resize(frame, (321, 241)), cv2.COLOR_BGR2GRAY)[:, :, None],
        "bgra": bgra,
        "strided view": frame[:, ::3],
        "flipped view": frame[::-1, ::-1][:470, :630],
        "fortran order": np.asfortranarray(cv2.resize(frame, (323, 243))),
        "read-only": readonly,
        "one pixel": frame[:1, :1].copy(),
        "one row": cv2.resize(frame, (2000, 1)),
        "one column": cv2.resize(frame, (1, 1500)),
        "larger": cv2.resize(frame, (1280, 720)),
        "odd size": cv2.resize(frame, (23, 17)),
    }


class ScriptedCamera:
    """A live camera for FrameSource: does what the test queues, else delivers good frames at 25 per second.

    Steps: ("picture", (ok, image)) hands over one picture and pauses STEP_S before the next grab;
    ("junk", (ok, image)) the same without the pause; ("stall", seconds) blocks a grab that long;
    ("fail", None) fails a grab, as a driver does on a read timeout; ("unplug", None) fails a grab
    and refuses to open until replug().
    """

    def __init__(self, good: list[np.ndarray]) -> None:
        self._good = good
        self._served = 0
        self._steps: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._plugged = threading.Event()
        self._plugged.set()
        self._queued = 0  # written by the test's thread only
        self.steps_done = 0  # written by the reader thread only
        self.backend = Backend("camera", "scripted camera", True, self._open)

    def queue(self, action: str, value: Any = None) -> int:
        """Queue a step; returns the value of steps_done once it is done."""
        self._queued += 1
        self._steps.put((action, value))
        return self._queued

    def replug(self) -> None:
        self._plugged.set()

    def _open(self) -> Capture:
        if not self._plugged.is_set():
            raise CaptureUnavailable("scripted camera: unplugged")
        return _ScriptedCapture(self)

    def _good_frame(self) -> tuple[bool, np.ndarray]:
        self._served += 1
        return True, self._good[self._served % len(self._good)]

    def grab_step(self) -> tuple[bool, tuple[bool, Any], float]:
        """(grab's result, what retrieve returns, seconds to pause before the next grab)."""
        try:
            action, value = self._steps.get(timeout=FRAME_PERIOD_S)
        except queue.Empty:
            return True, self._good_frame(), 0.0
        try:
            if action in ("picture", "junk"):
                return True, value, STEP_S if action == "picture" else 0.0
            if action == "stall":
                time.sleep(value)
                return True, self._good_frame(), 0.0
            if action == "unplug":
                self._plugged.clear()
            return False, (False, None), 0.0
        finally:
            self.steps_done += 1


class _ScriptedCapture:
    def __init__(self, camera: ScriptedCamera) -> None:
        self._camera = camera
        self._picture: tuple[bool, Any] = (False, None)
        self._pause = 0.0

    def grab(self) -> bool:
        time.sleep(self._pause)  # the previous picture waits in the source's slot for the loop
        grabbed, self._picture, self._pause = self._camera.grab_step()
        return grabbed

    def retrieve(self) -> tuple[bool, Any]:
        return self._picture

    def release(self) -> None:
        pass


@dataclass
class RunningLoop:
    """The AgentLoop on a thread of its own, the results it processed, and what it raised (if anything)."""

    loop: AgentLoop
    results: list[FrameResult] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> RunningLoop:
        self.thread = threading.Thread(target=self._run, name="frame-loop", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as error:  # handed to the test, which fails with it
            self.error = error

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait_processed(self, count: int, what: str, timeout: float = 15.0) -> None:
        wait_until(what, lambda: len(self.results) >= count or not self.alive(), timeout)
        assert self.alive(), f"the frame loop ended while waiting for {what}: {self.error!r}"

    def stop(self) -> None:
        self.loop.stop.set()
        assert self.thread is not None
        self.thread.join(10)
        assert not self.thread.is_alive(), "the frame loop did not stop"
        if self.error is not None:
            raise AssertionError("the frame loop raised") from self.error


@dataclass
class Rig:
    """The scripted camera, its good frames, the source reading it, the running loop, the subscriber."""

    camera: ScriptedCamera
    good: list[np.ndarray]
    source: FrameSource
    running: RunningLoop
    observer: Observer

    def stats(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [s for s in self.observer.json("stats") if s["ts"] >= since]

    def wait_steps(self, done: int, what: str, timeout: float = 15.0) -> None:
        wait_until(what, lambda: self.camera.steps_done >= done, timeout)
        assert self.running.alive(), f"the frame loop ended during {what}: {self.running.error!r}"

    def wait_stats(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict:
        self.observer.wait_for(what, lambda: any(predicate(s) for s in self.observer.json("stats")), timeout)
        return next(s for s in self.observer.json("stats") if predicate(s))


def good_frames(video: Path, count: int = 30) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    good = [capture.read()[1] for _ in range(count)]
    capture.release()
    return good


@contextmanager
def agent_loop_on(
    backend: Backend, tmp_path: Path, broker: Broker, fixture_onnx: Path, **source_options: float
) -> Iterator[tuple[FrameSource, RunningLoop]]:
    """The agent's frame loop, with its MQTT publisher and outbox, reading a FrameSource on `backend`."""
    detector, _ = load_detector(fixture_onnx, "auto", 1)
    settings = MqttSettings(broker.host, broker.port, f"{PREFIX}/{DEVICE}", DEVICE, reconnect_max_s=1)
    with Outbox(tmp_path / "outbox.sqlite3") as outbox, MqttPublisher(settings, outbox) as publisher:
        source = FrameSource(backend, loop=False, fps=0, reconnect_max_s=RECONNECT_MAX_S, **source_options)
        results: list[FrameResult] = []
        loop = frame_loop(
            source,
            detector,
            publisher,
            LoopSettings(stats_interval=STATS_INTERVAL_S),
            scene=SceneSettings.presence_only(end_after=0.5),
            report=ReportSettings(snapshot=SnapshotSettings()),
            hooks=LoopHooks(on_frame=results.append),
        )
        running = RunningLoop(loop, results)
        try:
            yield source, running.start()
        finally:
            if running.alive():
                running.loop.stop.set()
                running.thread.join(10)
            source.close()


@pytest.fixture
def rig(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> Iterator[Rig]:
    good = good_frames(sample_video[0])
    camera = ScriptedCamera(good)
    observer = observe(broker, DEVICE)
    with agent_loop_on(camera.backend, tmp_path, broker, fixture_onnx) as (source, running):
        yield Rig(camera, good, source, running, observer)


@pytest.mark.fault
def test_a_misbehaving_camera_never_stops_the_loop_and_is_reported(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="yolo_edge.source")
    camera, running = rig.camera, rig.running
    running.wait_processed(5, "the first frames")

    # Garbage: counted as invalid, never handed to the model, the frames around it processed.
    before = len(running.results)
    done = 0
    for _, ok, image in GARBAGE:
        done = camera.queue("picture", (ok, image))
    rig.wait_steps(done, "the garbage frames")
    running.wait_processed(before + 3, "good frames after the garbage")
    assert rig.source.health().frames_invalid == len(GARBAGE)
    rig.wait_stats("stats counting the garbage", lambda s: s["source"]["frames_invalid"] == len(GARBAGE))

    # Unusual but usable pictures: each one processed, its detections inside it.
    odd = odd_pictures(rig.good[0])
    for image in odd.values():
        done = camera.queue("picture", (True, image))
    rig.wait_steps(done, "the odd pictures")
    running.wait_processed(len(running.results) + 2, "good frames after the odd pictures")
    processed_hw = {r.source_hw for r in running.results}
    for name, image in odd.items():
        assert image.shape[:2] in processed_hw, f"{name} {image.shape} was not processed"
    assert rig.source.health().frames_invalid == len(GARBAGE), "usable pictures are not counted as garbage"
    for result in running.results:
        boxes, (height, width) = result.detections.boxes_xyxy, result.source_hw
        inside = (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
        assert inside, f"boxes outside their {width}x{height} frame: {boxes}"

    # A stall that ends by itself: stats go on (fps 0) while no frame comes.
    stall_began = time.time()
    done = camera.queue("stall", 4 * STATS_INTERVAL_S)
    rig.wait_steps(done, "the stall")
    # Stats whose whole window lies inside the stall.
    quiet = [s for s in rig.stats(stall_began + 2 * STATS_INTERVAL_S) if s["ts"] <= stall_began + 4 * STATS_INTERVAL_S]
    assert quiet and all(s["fps"] == 0 for s in quiet), "stats keep coming during a stall, and show it"

    # A failed read (a driver timeout), then an unplugged camera that comes back.
    done = camera.queue("fail")
    rig.wait_steps(done, "the failed read")
    rig.wait_stats("a reopen after the failed read", lambda s: s["source"]["reopen_count"] >= 1)
    running.wait_processed(len(running.results) + 3, "frames after the reopen")
    done = camera.queue("unplug")
    rig.wait_steps(done, "the unplugging")
    away = rig.wait_stats(
        "stats saying the camera is away",
        lambda s: not s["source"]["connected"] and "unplugged" in s["source"].get("last_error", ""),
    )
    assert running.alive()
    before = len(running.results)
    camera.replug()
    running.wait_processed(before + 3, "frames after the camera came back")
    rig.wait_stats("a reopen after the replug", lambda s: s["source"]["reopen_count"] >= 2 and s["source"]["connected"])

    # Nothing but garbage: the source gives up on the device after MAX_INVALID_IN_A_ROW and reopens it.
    for _ in range(MAX_INVALID_IN_A_ROW):
        done = camera.queue("junk", (True, None))
    rig.wait_steps(done, "a run of garbage")
    before = len(running.results)
    running.wait_processed(before + 3, "frames after the run of garbage")
    final_health = rig.source.health()
    running.stop()

    assert final_health.reopen_count == 3 and final_health.frames_invalid == len(GARBAGE) + MAX_INVALID_IN_A_ROW
    assert away["frames"]["processed"] >= 5
    source_log = [r.getMessage() for r in caplog.records if r.name == "yolo_edge.source"]
    lost = [m for m in source_log if m.startswith("source lost:")]
    assert len(lost) == 3 and f"{MAX_INVALID_IN_A_ROW} invalid frames in a row" in lost[-1], source_log
    assert sum(m.startswith("source back after") for m in source_log) == 3, source_log
    events = distinct_events(rig.observer.on("events"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


class WedgedCamera:
    """A live camera whose driver can wedge: then every grab, on any capture old or new, blocks until unwedged.

    It counts what a wedge costs the agent: captures open (opened and not released) and the reader
    threads blocked in a grab, now and at most.
    """

    def __init__(self, good: list[np.ndarray]) -> None:
        self._good = good
        self._working = threading.Event()
        self._working.set()
        self._lock = threading.Lock()
        self._in_grab: set[threading.Thread] = set()
        self.readers: set[threading.Thread] = set()  # every thread that ever grabbed
        self.most_stuck = 0
        self.opened = self.released = 0
        self.backend = Backend("camera", "wedged camera", True, self._open)

    def wedge(self) -> None:
        self._working.clear()

    def unwedge(self) -> None:
        self._working.set()

    def stuck(self) -> int:
        with self._lock:
            return len(self._in_grab)

    def _open(self) -> Capture:
        with self._lock:
            self.opened += 1
        return _WedgedCapture(self)

    def grab(self) -> bool:
        me = threading.current_thread()
        with self._lock:
            self.readers.add(me)
            if not self._working.is_set():
                self._in_grab.add(me)
                self.most_stuck = max(self.most_stuck, len(self._in_grab))
        self._working.wait(60)  # a wedged driver; 60 s only so a failed test cannot leave it behind for good
        with self._lock:
            self._in_grab.discard(me)
        time.sleep(FRAME_PERIOD_S)
        return True

    def frame(self) -> np.ndarray:
        return self._good[int(time.monotonic() * 25) % len(self._good)]

    def release(self) -> None:
        with self._lock:
            self.released += 1


class _WedgedCapture:
    def __init__(self, camera: WedgedCamera) -> None:
        self._camera = camera

    def grab(self) -> bool:
        return self._camera.grab()

    def retrieve(self) -> tuple[bool, Any]:
        return True, self._camera.frame()

    def release(self) -> None:
        self._camera.release()


@pytest.mark.fault
def test_a_camera_that_hangs_every_read_holds_a_bounded_number_of_readers_and_comes_back(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A driver that hangs in grab() for good used to cost a new reader thread and capture per stall timeout."""
    caplog.set_level(logging.INFO, logger="yolo_edge.source")
    stall_s = 0.3
    camera = WedgedCamera(good_frames(sample_video[0]))
    observer = observe(broker, DEVICE)
    with agent_loop_on(camera.backend, tmp_path, broker, fixture_onnx, stall_timeout_s=stall_s) as (source, running):
        running.wait_processed(5, "the first frames")
        camera.wedge()
        wedged = time.time()
        # Many stall timeouts, while the loop goes on asking for frames: stats keep coming all along.
        observer.wait_for(
            "stats 12 stall timeouts into the wedge",
            lambda: any(s["ts"] > wedged + 12 * stall_s for s in observer.json("stats")),
            timeout=15,
        )
        assert running.alive(), running.error
        bound = 1 + MAX_ABANDONED  # the current reader and the abandoned ones
        assert camera.most_stuck <= bound and camera.stuck() == bound, (camera.most_stuck, camera.stuck())
        assert camera.opened - camera.released <= bound and len(camera.readers) <= bound + 1, camera.readers
        stalled = observer.json("stats")[-1]["source"]
        assert stalled["abandoned_readers"] == MAX_ABANDONED and not stalled["connected"], stalled
        assert stalled["stalls"] == bound and "a read that does not return" in stalled["last_error"], stalled
        waiting = [r.getMessage() for r in caplog.records if "not reopening while" in r.getMessage()]
        assert len(waiting) == 1, caplog.text  # said once, not once per check

        # The driver comes back: the stuck reads return, the abandoned readers let go of their captures.
        before = len(running.results)
        camera.unwedge()
        running.wait_processed(before + 5, "frames after the camera came back")
        observer.wait_for(
            "stats with the camera back and no reader stuck",
            lambda: any(
                s["ts"] > wedged and s["source"]["connected"] and s["source"]["abandoned_readers"] == 0
                for s in observer.json("stats")
            ),
            timeout=10,
        )
        wait_until("the abandoned captures released", lambda: camera.opened - camera.released == 1, 5)
        assert sum(reader.is_alive() for reader in camera.readers) == 1
        assert source.health().stalls == bound
    assert any(r.getMessage().startswith("source back after") for r in caplog.records), caplog.text


# -- the agent process on a network camera that misbehaves ----------------------------------------


@pytest.mark.fault
def test_the_agent_rides_out_a_network_camera_that_sends_junk_stalls_and_goes_away(
    tmp_path: Path,
    broker: Broker,
    observe: Callable[..., Observer],
    fixture_onnx: Path,
    sample_video: tuple[Path, list],
) -> None:
    capture = cv2.VideoCapture(str(sample_video[0]))
    jpegs = [cv2.imencode(".jpg", capture.read()[1])[1].tobytes() for _ in range(10)]
    capture.release()
    server = MjpegServer(jpegs).start()
    observer = observe(broker, "fault-stream")
    args = [
        "run",
        "--source",
        server.url,
        "--model",
        str(fixture_onnx),
        *broker_args(broker.host, broker.port, "fault-stream"),
    ]
    env = agent_env(tmp_path / "state", stats_interval=1, source_reconnect_max_s=RECONNECT_MAX_S)

    def processed() -> int:
        stats = observer.json("stats")
        return stats[-1]["frames"]["processed"] if stats else 0

    def wait_frames(what: str, more: int = 5, timeout: float = 20.0) -> None:
        target = processed() + more
        observer.wait_for(what, lambda: processed() >= target, timeout)

    def wait_logged(agent: AgentProcess, text: str, count: int) -> None:
        wait_until(f"{text!r} logged {count} times", lambda: agent.stderr.count(text) >= count or not agent.running, 20)
        assert agent.running, agent.describe()

    try:
        with AgentProcess(args, env, tmp_path) as agent:
            wait_frames("frames from the stream", timeout=30)
            # Junk where JPEGs should be: FFmpeg fails the read, the source reopens until JPEGs come again.
            server.mode = "corrupt"
            wait_logged(agent, "source lost:", 1)
            server.mode = "good"
            wait_logged(agent, "source back after", 1)
            wait_frames("frames after the junk")

            # A stall: stats go on at 0 fps until FFmpeg's read timeout turns it into a lost source.
            server.mode = "stall"
            stalled = time.time()
            wait_logged(agent, "source lost:", 2)
            server.mode = "good"
            wait_logged(agent, "source back after", 2)
            wait_frames("frames after the stall")
            during_stall = [s for s in observer.json("stats") if stalled + 1.5 < s["ts"] < stalled + 4.0]
            assert during_stall and all(s["fps"] == 0 for s in during_stall), during_stall

            # The camera gone from the network, and back on the same address.
            server.stop()
            observer.wait_for(
                "stats saying the camera is away",
                lambda: any(
                    not s["source"]["connected"] and "cannot connect" in s["source"].get("last_error", "")
                    for s in observer.json("stats")
                ),
                timeout=20,
            )
            server.start()
            wait_logged(agent, "source back after", 3)
            wait_frames("frames after the camera came back")
            final = observer.json("stats")[-1]
            code, _ = agent.stop(timeout=5.0)
            assert code == 0, agent.describe()
            log = agent.stderr
    finally:
        server.stop()
    assert final["source"]["connected"] and final["source"]["reopen_count"] >= 3, final["source"]
    assert log.count("source lost:") == 3 and log.count("source back after") == 3, log
    assert "Traceback" not in log
    print(f"stream source at the end: {final['source']}")
