"""Frame sources: one reader thread per camera, stream, video file or image folder.

Live sources (camera, stream, picamera2) keep only the newest frame, in a one-frame slot, so
inference never works on a frame that waited in a driver queue; when the device or stream goes
away they reopen with capped exponential backoff, forever. Files and folders feed a blocking
queue of two, so every frame is processed (deterministic tests and benchmarks), unless an fps is
set, which makes them play like a live source. What a uri names and how it is opened is in
capture.py.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from agent.pipeline.capture import Backend, Capture, CaptureUnavailable, SourceError, resolve, to_bgr
from agent.pipeline.frame_buffer import FrameBuffer
from agent.pipeline.frames import Frame
from agent.pipeline.read_watch import ReadWatch
from agent.system.cpu_turns import TURNS
from agent.urls import traceback_text

__all__ = ["FrameSource", "SourceError", "SourceHealth", "open_source"]

log = logging.getLogger("yolo_edge.source")

BACKOFF_START_S = 0.5
# About a second of junk from a 30 fps camera: a device that only returns garbage is as good as gone.
MAX_INVALID_IN_A_ROW = 30
FILE_QUEUE_FRAMES = 2
JOIN_TIMEOUT_S = 1.0
# A live read that has not returned for this long is stuck (a driver or a stream that neither delivers
# nor fails): the reader is abandoned and a new one reopens, within read_watch's bound. Longer than the
# backends' own read timeouts (capture.STREAM_TIMEOUT_MS, V4L2's select), which turn most stalls into
# a failed read first.
STALL_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SourceHealth:
    """A snapshot of a source for stats and `check`.

    frames_read: valid frames captured. frames_invalid: garbage frames and unreadable images, not
    delivered. reopen_count: successful opens after the first (a looping file does not count).
    frames_dropped: frames replaced by a newer one before the consumer read them.
    reopen_attempts: opens tried after the first, failed or not.
    stalls: reads that did not return within the stall timeout, each counted once.
    abandoned_readers: readers given up in a read that has not returned yet; each holds a thread
    and a capture, and none is started while read_watch.MAX_ABANDONED of them are stuck.
    """

    kind: str
    connected: bool
    frames_read: int
    frames_invalid: int
    reopen_count: int
    last_error: str | None
    frames_dropped: int
    reopen_attempts: int
    stalls: int = 0
    abandoned_readers: int = 0


class FrameSource:
    """Frames from one source, read by a daemon thread started here. Use `with`, or call close().

    Counters are written by the reader thread only and read by health(); single int and bool
    assignments are atomic in CPython, and a snapshot a frame out of date is fine for stats.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        loop: bool,
        fps: float,
        reconnect_max_s: float,
        first: Capture | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        self.kind = backend.kind
        self.name = backend.name
        self._backend = backend
        self._loop = loop
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._reconnect_max_s = reconnect_max_s
        keep_newest = backend.live or fps > 0
        self._buffer = FrameBuffer(1 if keep_newest else FILE_QUEUE_FRAMES, keep_newest)
        # A file read without pacing waits for nobody, so its frames count as captured when taken:
        # the agent's max_frame_age must never drop them for having sat in the queue.
        self._stamp_on_read = not keep_newest
        self._stop = threading.Event()
        self._settled = threading.Event()  # set by the first frame, or when the reader quits
        self._exhausted = False
        self._error: BaseException | None = None
        self._closed = False
        self._next_id = 1
        self._connected = first is not None
        self._frames_read = 0
        self._frames_invalid = 0
        self._opens = 1 if first is not None else 0
        self._opened = self._opens
        self._last_error: str | None = None
        # Each reader thread has a generation; a reader found stuck in a read is abandoned by raising
        # the generation, and whatever it does when (if ever) the read returns is ignored.
        self._watch = ReadWatch(stall_timeout_s)
        self._thread = self._start_reader(self._run_live if backend.live else self._run_file, first)

    def _start_reader(self, run: Callable[[Capture | None, int], None], first: Capture | None) -> threading.Thread:
        thread = threading.Thread(
            target=self._main, args=(run, first, self._watch.generation), name=f"source-{self.kind}", daemon=True
        )
        thread.start()
        return thread

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read(self, timeout: float) -> Frame | None:
        """The next frame not yet returned, or None when none came within `timeout` seconds.

        Never blocks longer than `timeout`; None at once when the source ended or was closed.
        """
        if self._error is not None:
            raise RuntimeError(f"frame reader of {self.name} failed") from self._error
        if self._closed:
            return None
        self._replace_a_stuck_reader()
        frame = self._buffer.get(timeout)
        if frame is not None and self._stamp_on_read:
            frame = dataclasses.replace(frame, captured_at=time.time(), captured_mono=time.monotonic())
        return frame

    @property
    def ended(self) -> bool:
        """True once a video file or folder ran out (loop false) and its last frame was read."""
        return self._exhausted and self._buffer.empty()

    def health(self) -> SourceHealth:
        return SourceHealth(
            kind=self.kind,
            connected=self._connected,
            frames_read=self._frames_read,
            frames_invalid=self._frames_invalid,
            reopen_count=max(0, self._opened - 1),
            last_error=self._last_error,
            frames_dropped=self._buffer.dropped,
            reopen_attempts=max(0, self._opens - 1),
            stalls=self._watch.stalls,
            abandoned_readers=self._watch.abandoned(),
        )

    def probe(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for a first frame; SourceError with one line if none came."""
        self._settled.wait(timeout)
        if self._frames_read == 0:
            reason = self._last_error or ("no readable frame" if self._exhausted else "opened, but no frame arrived")
            raise SourceError(f"{self.name}: no frame within {timeout:g} s: {reason}")

    def close(self) -> None:
        """Stop the reader (within about a second) and release the device. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._buffer.finish()
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            # Stuck in a driver or network read that cannot be interrupted; being a daemon, it
            # exits when that read times out (capture.STREAM_TIMEOUT_MS) and releases its capture.
            log.warning("source reader of %s still in a blocking read; it exits when the read times out", self.name)

    def _replace_a_stuck_reader(self) -> None:
        """Called by the consumer: a live read stuck past the stall timeout gets its reader replaced, if allowed."""
        stall = None if self._closed else self._watch.check(self._thread)
        if stall is None:
            return
        if stall.first:
            self._connected = False
            self._last_error = f"no frame for {stall.stuck_s:.0f} s, a read that does not return: {self.name}"
        if stall.replaced:
            log.warning("source lost: %s: a read has not returned for %.0f s; reopening", self.name, stall.stuck_s)
            # The stuck thread keeps its capture and releases it if its read ever returns.
            self._thread = self._start_reader(self._run_live, None)
        elif stall.first:
            log.warning(
                "source lost: %s: a read has not returned for %.0f s; not reopening while %d earlier reader(s) "
                "are still stuck in the driver: waiting for a read to return",
                self.name,
                stall.stuck_s,
                stall.stuck_readers,
            )

    def _current(self, generation: int) -> bool:
        return generation == self._watch.generation and not self._stop.is_set()

    def _main(self, run: Callable[[Capture | None, int], None], first: Capture | None, generation: int) -> None:
        try:
            run(first, generation)
        except Exception as exc:
            if generation == self._watch.generation:
                # A bug, not a source going away: hand it to the consumer's read() instead of dying unseen.
                # Not log.exception: the traceback may quote the uri with its password.
                log.error("source reader of %s failed:\n%s", self.name, self._backend.scrub(traceback_text(exc)))
                self._error = exc
        finally:
            if generation == self._watch.generation:
                self._connected = False
                self._buffer.finish()
                self._settled.set()

    def _frame(self, image: Any) -> Frame:
        frame = Frame(image=image, frame_id=self._next_id, captured_at=time.time(), captured_mono=time.monotonic())
        self._next_id += 1
        self._frames_read += 1
        self._settled.set()
        return frame

    def _open_live(self) -> Capture | None:
        self._opens += 1
        try:
            cap = self._backend.open()
        except CaptureUnavailable as exc:
            self._last_error = self._backend.scrub(str(exc))  # shown in stats and logs
            return None
        self._opened += 1
        return cap

    def _grab(self, cap: Capture, generation: int) -> tuple[bool, float | None] | None:
        """(cap.grab(), when the read began if it was reported stuck), timed for the stall check;
        None when this reader was abandoned meanwhile."""
        self._watch.begin()
        grabbed = cap.grab()
        current, stuck_since = self._watch.end(generation)
        return (grabbed, stuck_since) if current else None

    def _run_live(self, first: Capture | None, generation: int) -> None:
        cap = first
        delay = min(BACKOFF_START_S, self._reconnect_max_s)
        # Monotonic time the outage began; None while frames flow. A replacement reader starts inside one.
        down_since: float | None = None if generation == 0 else time.monotonic()
        invalid_in_row = 0
        next_due = 0.0
        try:
            while self._current(generation):
                if cap is None:
                    if self._opens > 0:
                        if self._stop.wait(delay):
                            break
                        delay = min(delay * 2, self._reconnect_max_s)
                    cap = self._open_live()
                    if not self._current(generation):
                        break
                    if cap is None:
                        if down_since is None:
                            down_since = time.monotonic()
                            log.warning("source unavailable: %s: %s; retrying", self.name, self._last_error)
                        continue
                    invalid_in_row = 0
                read = self._grab(cap, generation)
                if read is None:
                    break  # abandoned while stuck in the read: a newer reader owns the source now
                grabbed, stuck_since = read
                if down_since is None and stuck_since is not None:
                    down_since = stuck_since  # reported lost while stuck, not replaced: its return ends that
                if not grabbed:
                    reason = "read failed"
                elif self._period and time.monotonic() < next_due:
                    continue  # grabbing anyway drains the driver's queue; only delivered frames are decoded
                else:
                    ok, raw = cap.retrieve()
                    image = to_bgr(raw) if ok else None
                    if image is not None:
                        now = time.monotonic()
                        if down_since is not None:
                            word = "back" if self._frames_read else "up"
                            log.info("source %s after %.1f s: %s", word, now - down_since, self.name)
                            down_since = None
                        delay = min(BACKOFF_START_S, self._reconnect_max_s)
                        invalid_in_row = 0
                        self._connected = True
                        # Stay on the fps grid; after a stall restart it rather than catch up in a burst.
                        next_due = next_due + self._period if now - next_due < self._period else now + self._period
                        self._buffer.put(self._frame(image))
                        continue
                    self._frames_invalid += 1
                    invalid_in_row += 1
                    if invalid_in_row < MAX_INVALID_IN_A_ROW:
                        continue
                    reason = f"{invalid_in_row} invalid frames in a row"
                cap.release()
                cap = None
                self._connected = False
                self._last_error = f"{reason}: {self.name}"
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "source lost: %s: %s; reopening, backoff up to %g s", self.name, reason, self._reconnect_max_s
                    )
        finally:
            if cap is not None:
                cap.release()

    def _run_file(self, first: Capture | None, generation: int) -> None:
        cap = first
        frames_this_pass = 0
        next_due = time.monotonic()
        # Inferences ended when the last two decodes began: the loop runs them if the count moved between.
        ended_at_decodes = (TURNS.ended, TURNS.ended)
        try:
            while cap is not None and not self._stop.is_set():
                if not self._period:
                    # A file read ahead of the loop decodes between inferences (agent/system/cpu_turns.py).
                    TURNS.wait_for_a_turn(ended_at_decodes[0], self._buffer.empty, self._stop)
                    ended_at_decodes = (ended_at_decodes[1], TURNS.ended)
                if not cap.grab():
                    cap.release()
                    cap = None
                    if not self._loop:
                        break
                    if frames_this_pass == 0:
                        # Looping over a file with nothing readable would spin forever.
                        self._last_error = f"no readable frame in {self.name}"
                        break
                    frames_this_pass = 0
                    try:
                        cap = self._backend.open()
                    except CaptureUnavailable as exc:  # the file or folder vanished meanwhile
                        self._last_error = self._backend.scrub(str(exc))
                        log.warning("source ended: %s", self._last_error)
                    continue
                ok, raw = cap.retrieve()
                image = to_bgr(raw) if ok else None
                if image is None:
                    self._frames_invalid += 1
                    continue
                frames_this_pass += 1
                if self._period:
                    # Play at fps: hold the decoded frame until its time, then stamp and offer it.
                    if self._stop.wait(max(0.0, next_due - time.monotonic())):
                        break
                    next_due = max(next_due + self._period, time.monotonic())
                if not self._buffer.put(self._frame(image)):
                    break  # closed while waiting for room
            self._exhausted = not self._stop.is_set()
        finally:
            if cap is not None:
                cap.release()


def open_source(
    uri: str,
    loop: bool = False,
    fps: float = 0.0,
    reconnect_max_s: float = 10.0,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> FrameSource:
    """Open `uri` and start reading it in a daemon thread.

    uri: a camera index ("0") or /dev/videoN (V4L2), an rtsp(s):// or http(s):// stream, an image
    folder (jpg, jpeg, png, bmp, webp in sorted order), a video file, or "picamera2".
    loop: restart a file or folder at its end. fps: deliver at most this many frames per second
    (0: as fast as they come; a file then delivers every frame). reconnect_max_s: the cap, in
    seconds, of the backoff between reopen attempts of a lost camera or stream. stall_timeout_s: a
    live read that has not returned for this long is given up and the source reopened.

    Raises SourceError for what can be checked at once: a path that does not exist, an empty folder,
    an undecodable video, Picamera2 not installed. A camera or stream that is unreachable right
    now does not raise: the reader keeps trying (use probe() to insist on a frame).
    """
    if fps < 0 or reconnect_max_s <= 0 or stall_timeout_s <= 0:
        raise ValueError(
            f"fps must be >= 0, reconnect_max_s and stall_timeout_s > 0, got fps={fps}, "
            f"reconnect_max_s={reconnect_max_s}, stall_timeout_s={stall_timeout_s}"
        )
    backend = resolve(uri)
    first = None
    if not backend.live:
        try:
            first = backend.open()
        except CaptureUnavailable as exc:
            raise SourceError(backend.scrub(str(exc))) from None
    return FrameSource(
        backend, loop=loop, fps=fps, reconnect_max_s=reconnect_max_s, first=first, stall_timeout_s=stall_timeout_s
    )
