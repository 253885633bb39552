"""Frame sources against real files, a real local MJPEG stream and a camera that is not there."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.pipeline.capture import to_bgr
from agent.pipeline.frames import Frame
from agent.pipeline.sources import FrameSource, SourceError, open_source
from tests.agent.agent_process import MjpegServer
from tests.broker import free_port

H, W = 48, 64
LEVELS = [10 * i + 20 for i in range(12)]  # one gray level per frame, far enough apart to survive JPEG


def gray(level: int) -> np.ndarray:
    return np.full((H, W, 3), level, np.uint8)


def level_of(frame: Frame) -> int:
    return round(float(frame.image.mean()))


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def drain(src: FrameSource, timeout: float = 5.0) -> list[Frame]:
    """Every frame until the source ends (bounded by `timeout` seconds overall)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while not src.ended and time.monotonic() < deadline:
        frame = src.read(0.5)
        if frame is not None:
            frames.append(frame)
    assert src.ended, "the source did not end in time"
    return frames


def write_video(path: Path, fourcc: str, levels: list[int]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (W, H))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc} into {path.suffix}"
    for level in levels:
        writer.write(gray(level))
    writer.release()
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi", "MJPG", LEVELS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name, level in [("b.png", 60), ("a.jpg", 30), ("d.webp", 120), ("c.bmp", 90)]:
        assert cv2.imwrite(str(root / name), gray(level))
    (root / "x.jpg").write_bytes(b"not a jpeg at all" * 8)
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    # 25 fps of gray frames, the levels in turn; stop() and start() again keep the port
    server = MjpegServer([cv2.imencode(".jpg", gray(level))[1].tobytes() for level in LEVELS], fps=25).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("name", "fourcc"), [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_file_delivers_every_frame_in_order_then_ends(tmp_path: Path, name: str, fourcc: str) -> None:
    path = write_video(tmp_path / name, fourcc, LEVELS)
    with open_source(str(path)) as src:
        frames = drain(src)
        assert [f.frame_id for f in frames] == list(range(1, len(LEVELS) + 1))
        assert [level_of(f) for f in frames] == pytest.approx(LEVELS, abs=4)
        assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
        assert src.read(0.1) is None
        health = src.health()
    assert (health.kind, health.frames_read, health.frames_invalid, health.frames_dropped) == ("file", 12, 0, 0)


def test_unpaced_file_frames_are_stamped_when_taken(video: Path) -> None:
    # The queue holds decoded frames while the consumer is busy; they must not look stale to it.
    with open_source(str(video)) as src:
        assert wait_for(lambda: src.health().frames_read >= 2, 5.0), "the reader decoded nothing"
        # The frame read next was decoded before this moment: stamped when decoded, it would be older.
        asked_mono, asked_at = time.monotonic(), time.time()
        frame = src.read(1.0)
        assert frame is not None
        assert asked_mono <= frame.captured_mono <= time.monotonic()
        assert asked_at <= frame.captured_at <= time.time()


def test_video_file_loop_keeps_going_and_counting(video: Path) -> None:
    with open_source(str(video), loop=True) as src:
        frames = [src.read(1.0) for _ in range(2 * len(LEVELS) + 3)]
        assert not src.ended
    assert [f.frame_id for f in frames if f] == list(range(1, 2 * len(LEVELS) + 4))
    assert [level_of(f) for f in frames if f][len(LEVELS) : len(LEVELS) + 3] == pytest.approx(LEVELS[:3], abs=4)


def test_video_file_at_fps_is_paced_and_keeps_newest(tmp_path: Path) -> None:
    levels = [20 + 10 * (i % 20) for i in range(20)]
    path = write_video(tmp_path / "paced.avi", "MJPG", levels)
    started = time.monotonic()
    with open_source(str(path), fps=20) as src:
        frames: list[Frame] = []
        while not src.ended and time.monotonic() - started < 15:
            frame = src.read(0.5)
            if frame is not None:
                frames.append(frame)
                time.sleep(0.12)  # a consumer slower than 20 fps
        health = src.health()
    assert src.ended
    ids = [f.frame_id for f in frames]
    assert ids == sorted(set(ids)) and ids[-1] == 20
    assert len(ids) < 20 and health.frames_dropped == 20 - len(ids)
    # Paced, never early: frame n is offered no sooner than (n - 1) / fps after the source opened (1 ms
    # for the clock's rounding). A loaded machine can only make it later: there is no upper bound to hold.
    early = [
        (f.frame_id, f.captured_mono - started)
        for f in frames
        if f.captured_mono - started < (f.frame_id - 1) / 20 - 1e-3
    ]
    assert early == [], early


def test_folder_in_sorted_order_skips_and_counts_unreadable(folder: Path) -> None:
    with open_source(str(folder)) as src:
        frames = drain(src)
        health = src.health()
    assert [level_of(f) for f in frames] == pytest.approx([30, 60, 90, 120], abs=3)
    assert [f.frame_id for f in frames] == [1, 2, 3, 4]
    assert (health.kind, health.frames_read, health.frames_invalid) == ("folder", 4, 1)


def test_folder_loop_starts_again_from_the_first_image(folder: Path) -> None:
    with open_source(str(folder), loop=True) as src:
        frames = [src.read(1.0) for _ in range(6)]
    assert [level_of(f) for f in frames if f] == pytest.approx([30, 60, 90, 120, 30, 60], abs=3)
    assert [f.frame_id for f in frames if f] == [1, 2, 3, 4, 5, 6]


def test_folder_without_images_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="holds no"):
        open_source(str(tmp_path))


def test_stream_lost_and_back(mjpeg_server: MjpegServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="yolo_edge.source")
    with open_source(mjpeg_server.url, reconnect_max_s=0.5) as src:
        first = src.read(5.0)
        assert first is not None and first.image.shape == (H, W, 3)
        src.probe(1.0)
        ids = [first.frame_id] + [f.frame_id for f in (src.read(1.0) for _ in range(5)) if f]
        assert ids == sorted(set(ids)), "a live source returns each frame at most once"
        assert src.health().connected

        mjpeg_server.stop()
        assert wait_for(lambda: not src.health().connected, 5.0)
        while src.read(0.05) is not None:
            pass  # the frame left in the slot from before the outage
        # Several failed reopen attempts (the first open counts as none): still a single warning.
        assert wait_for(lambda: src.health().reopen_attempts >= 2, 5.0)
        assert src.read(0.2) is None
        assert src.health().last_error

        mjpeg_server.start()
        back = src.read(5.0)
        assert back is not None and back.frame_id > ids[-1]
        assert src.read(2.0) is not None
        after = src.health()
    assert after.connected and after.reopen_count >= 1
    messages = [r.getMessage() for r in caplog.records if r.name == "yolo_edge.source"]
    assert sum(m.startswith("source lost:") for m in messages) == 1, messages
    assert sum(m.startswith("source back after") for m in messages) == 1, messages


def test_missing_camera_waits_instead_of_failing() -> None:
    with open_source("/dev/video57", reconnect_max_s=0.5) as src:
        started = time.monotonic()
        assert src.read(0.3) is None
        assert time.monotonic() - started < 0.6
        assert wait_for(lambda: src.health().reopen_attempts >= 1, 3.0)
        health = src.health()
        assert not health.connected and health.kind == "camera" and "/dev/video57" in (health.last_error or "")
        with pytest.raises(SourceError, match=r"camera /dev/video57: no frame within 0\.2 s: .*does not exist"):
            src.probe(0.2)


def test_nonexistent_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=f"'{missing}' not found.*rtsp://"):
        open_source(str(missing))


def test_a_stream_that_cannot_be_opened_never_shows_its_password_or_token(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on the port: every open is refused, and each refusal is logged, counted and kept.
    port = free_port()
    uri = f"rtsp://user:pw@127.0.0.1:{port}/stream?token=SECRET"
    caplog.set_level(logging.DEBUG)
    with open_source(uri, reconnect_max_s=0.2) as src:
        assert wait_for(lambda: src.health().reopen_attempts >= 1 and src.health().last_error is not None, 10.0)
        with pytest.raises(SourceError) as caught:
            src.probe(0.1)
        health = src.health()
    shown = f"stream rtsp://127.0.0.1:{port}/stream"
    assert src.name == shown and str(caught.value).startswith(shown), (src.name, str(caught.value))
    assert "cannot connect to" in (health.last_error or "") and "source unavailable" in caplog.text
    shown_where = {"name": src.name, "error": str(caught.value), "health": repr(health), "log": caplog.text}
    for where, text in shown_where.items():
        assert "pw" not in text and "SECRET" not in text, f"{where}: {text}"


def test_an_unknown_url_scheme_is_named_without_its_secrets() -> None:
    with pytest.raises(SourceError) as caught:
        open_source("rtmp://user:pw@cam.lan/live?token=SECRET")
    message = str(caught.value)
    assert message.startswith("source 'rtmp://cam.lan/live' not found"), message
    assert "pw" not in message and "SECRET" not in message


def test_undecodable_video_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(SourceError, match="cannot decode video file"):
        open_source(str(bad))


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="Picamera2 is installed here")
def test_picamera2_missing_says_how_to_install() -> None:
    with pytest.raises(SourceError, match=r"python3-picamera2 with apt.*--system-site-packages"):
        open_source("picamera2")


def test_close_stops_the_reader_threads(video: Path) -> None:
    before = threading.active_count()
    # A file reader blocked on its full queue, a looping one, and one retrying a missing camera.
    sources = [open_source(str(video)), open_source(str(video), loop=True), open_source("/dev/video57")]
    assert wait_for(lambda: sources[0].health().frames_read >= 2, 2.0)
    started = time.monotonic()
    for src in sources:
        src.close()
        src.close()  # idempotent
    assert time.monotonic() - started < 1.5
    assert threading.active_count() == before
    assert sources[0].read(0.1) is None


@pytest.mark.parametrize(
    ("image", "shape"),
    [
        (np.zeros((4, 6, 3), np.uint8), (4, 6, 3)),
        (np.zeros((4, 6), np.uint8), (4, 6, 3)),
        (np.zeros((4, 6, 1), np.uint8), (4, 6, 3)),
        (np.zeros((4, 6, 4), np.uint8), (4, 6, 3)),
        (None, None),
        (np.zeros((0, 6, 3), np.uint8), None),
        (np.zeros((4, 6, 3), np.float32), None),
        (np.zeros((4, 6, 2), np.uint8), None),
        (np.zeros((2, 4, 6, 3), np.uint8), None),
    ],
)
def test_to_bgr_passes_pictures_and_rejects_garbage(image: np.ndarray | None, shape: tuple[int, ...] | None) -> None:
    out = to_bgr(image)
    assert (None if out is None else out.shape) == shape


class StuckCamera:
    """A live camera whose first `stuck` captures block in grab() until let go; later opens deliver frames.

    Capture i (0-based) sets in_grab[i] when its read begins and released[i] when it is released.
    """

    def __init__(self, stuck: int = 1) -> None:
        self.let_go = [threading.Event() for _ in range(stuck)]
        self.in_grab = [threading.Event() for _ in range(stuck)]
        self.released = [threading.Event() for _ in range(stuck)]
        self.opens = 0

    def open(self) -> StuckCamera.Capture:
        self.opens += 1
        return self.Capture(self, self.opens - 1 if self.opens <= len(self.let_go) else None)

    def let_all_go(self) -> None:
        for event in self.let_go:
            event.set()

    class Capture:
        def __init__(self, camera: StuckCamera, stuck: int | None) -> None:
            self.camera, self.stuck = camera, stuck

        def grab(self) -> bool:
            if self.stuck is not None:
                self.camera.in_grab[self.stuck].set()
                self.camera.let_go[self.stuck].wait(30)
            else:
                time.sleep(0.01)  # a camera's frame period
            return True

        def retrieve(self) -> tuple[bool, np.ndarray]:
            # The stuck captures' frames are black, the good one's grey: a frame from an abandoned reader shows.
            return True, gray(0 if self.stuck is not None else 128)

        def release(self) -> None:
            if self.stuck is not None:
                self.camera.released[self.stuck].set()


def read_frames(src: FrameSource, count: int, timeout: float = 10.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        if (frame := src.read(0.1)) is not None:
            frames.append(frame)
    return frames


def test_a_read_that_never_returns_gets_its_reader_replaced(caplog: pytest.LogCaptureFixture) -> None:
    from agent.pipeline.capture import Backend

    camera = StuckCamera()
    backend = Backend("camera", "camera stuck", True, camera.open)
    with caplog.at_level(logging.WARNING, logger="yolo_edge.source"):
        src = FrameSource(backend, loop=False, fps=0, reconnect_max_s=0.2, stall_timeout_s=0.5)
        try:
            assert camera.in_grab[0].wait(5), "the reader never started its first read"
            frames = read_frames(src, 3)
            assert len(frames) == 3, f"no frames from the reopened camera; health {src.health()}"
            assert {level_of(f) for f in frames} == {128}
            health = src.health()
            assert health.stalls == 1 and health.connected and camera.opens == 2, health
            assert health.abandoned_readers == 1, health
            assert any("a read has not returned" in r.getMessage() for r in caplog.records), caplog.text

            # The stuck read returns at last: its reader lets go of its capture and delivers nothing.
            camera.let_all_go()
            assert camera.released[0].wait(5), "the abandoned reader kept its capture"
            later = [f for f in (src.read(0.1) for _ in range(10)) if f is not None]
            assert later and {level_of(f) for f in later} == {128}
            assert src.health().abandoned_readers == 0
        finally:
            camera.let_all_go()
            src.close()


def test_no_new_reader_while_an_abandoned_one_is_still_stuck(caplog: pytest.LogCaptureFixture) -> None:
    """A device that hangs every reader: one is abandoned, the next waits until a stuck read returns."""
    from agent.pipeline.capture import Backend
    from agent.pipeline.read_watch import MAX_ABANDONED

    stall_s = 0.3
    camera = StuckCamera(stuck=MAX_ABANDONED + 1)
    backend = Backend("camera", "camera wedged", True, camera.open)
    with caplog.at_level(logging.INFO, logger="yolo_edge.source"):
        src = FrameSource(backend, loop=False, fps=0, reconnect_max_s=0.2, stall_timeout_s=stall_s)
        try:
            # Stuck readers are noticed by the consumer, in read().
            replaced = wait_for(lambda: src.read(0.05) is None and camera.in_grab[-1].is_set(), 10)
            assert replaced, f"the readers were not replaced up to the bound; {src.health()}"
            # The consumer goes on asking for frames over many stall timeouts: nothing more is opened.
            assert read_frames(src, 1, timeout=6 * stall_s) == []
            health = src.health()
            assert camera.opens == MAX_ABANDONED + 1 and health.abandoned_readers == MAX_ABANDONED, health
            assert health.stalls == MAX_ABANDONED + 1 and not health.connected, health
            assert "a read that does not return" in (health.last_error or ""), health
            waiting = [r for r in caplog.records if "not reopening while" in r.getMessage()]
            assert len(waiting) == 1, caplog.text

            # The first stuck read returns: its reader releases its capture and exits, so the reader
            # still stuck may be replaced, and the capture opened next delivers.
            camera.let_go[0].set()
            assert camera.released[0].wait(5), "the abandoned reader kept its capture"
            frames = read_frames(src, 3)
            assert len(frames) == 3 and {level_of(f) for f in frames} == {128}, src.health()
            health = src.health()
            assert health.connected and health.abandoned_readers == MAX_ABANDONED, health
            camera.let_all_go()
            assert all(released.wait(5) for released in camera.released), "an abandoned reader kept its capture"
            assert wait_for(lambda: src.health().abandoned_readers == 0, 5), src.health()
        finally:
            camera.let_all_go()
            src.close()
