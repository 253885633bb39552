"""Capture backends: what a source uri names, and how to open and read it.

A backend opens a `Capture`, the grab / retrieve / release subset of `cv2.VideoCapture`, so a
VideoCapture is one as it is and an image folder or a Picamera2 camera only has to look like one.
The threading, pacing and recovery around a capture live in sources.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from agent.urls import public_url, scrub, shown_uri

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
ACCEPTED = (
    "a camera index (0) or /dev/videoN, an rtsp://, rtsps://, http:// or https:// URL, "
    "an existing video file or image folder, or 'picamera2' (or 'picamera2:N' for Picamera2's camera N)"
)
# A Pi 5 has two CSI ports: 'picamera2:1' is the second camera, numbered as Picamera2.global_camera_info() lists them.
PICAMERA2_URI = re.compile(r"picamera2(?::(\d{1,2}))?")
# FFmpeg's default is 30 s per open and per read; a dead stream should be noticed well before that.
STREAM_TIMEOUT_MS = 5000
PICAMERA2_TIMEOUT_S = 2.0


class SourceError(Exception):
    """A source the user named cannot be used; the message is one line that names it."""


class CaptureUnavailable(Exception):
    """A capture cannot be opened right now (unplugged camera, stream down); live readers retry."""


class Capture(Protocol):
    def grab(self) -> bool:
        """Take the next frame from the device or file; False when that failed or the file ended."""

    def retrieve(self) -> tuple[bool, Any]:
        """Decode the grabbed frame: (ok, image); the image may still be garbage, see `to_bgr`."""

    def release(self) -> None: ...


def _as_is(text: str) -> str:
    return text


def _scrub_of(uri: str, text: str) -> str:
    return scrub(text, uri)


@dataclass(frozen=True)
class Backend:
    """One resolved uri. name: for logs, stats and errors, a stream's URL reduced to scheme, host, port, path.

    live: a camera or stream (newest frame wins, reopen when lost) rather than a file or folder.
    open: returns a new Capture or raises CaptureUnavailable. scrub: takes the uri's secrets out of a
    text that may quote it (an exception's message). Neither is in the repr: both hold the raw uri.
    """

    kind: str
    name: str
    live: bool
    open: Callable[[], Capture] = field(repr=False)
    scrub: Callable[[str], str] = field(default=_as_is, repr=False)


def to_bgr(image: Any) -> np.ndarray | None:
    """Return `image` as (H, W, 3) uint8 BGR, or None when it is not a usable picture.

    Grayscale (H, W) or (H, W, 1) becomes BGR and BGRA loses its alpha; anything else
    (None, empty, another dtype or channel count) is garbage that must not reach the model.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3:
        return None
    if image.shape[2] == 3:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return None


def resolve(uri: str) -> Backend:
    """Classify `uri`; raises SourceError for a path that does not exist or a missing Picamera2."""
    text = uri.strip()
    if picamera2 := PICAMERA2_URI.fullmatch(text):
        number = picamera2.group(1)
        name = f"picamera2 camera {int(number)}" if number else "picamera2 camera"
        return Backend("picamera2", name, True, _Picamera2Capture.opener(int(number or 0)))
    if text.startswith("picamera2:"):
        raise SourceError(f"source {text!r}: expected 'picamera2' or 'picamera2:N', N being Picamera2's camera number")
    if text.isdigit():
        return Backend("camera", f"camera {text}", True, partial(_open_camera, int(text)))
    if text.startswith("/dev/"):
        # Not checked for existence: the agent waits for a USB camera that is plugged in later.
        return Backend("camera", f"camera {text}", True, partial(_open_camera, text))
    if urlsplit(text).scheme.lower() in STREAM_SCHEMES:
        name = f"stream {public_url(text)}"
        return Backend("stream", name, True, partial(_open_stream, text, name), partial(_scrub_of, text))
    path = Path(text).expanduser()
    if text and path.is_dir():
        return Backend("folder", f"image folder {path}", False, partial(_FolderCapture, path))
    if text and path.is_file():
        return Backend("file", f"video file {path}", False, partial(_open_file, path))
    # A URL with a scheme this agent does not read (rtmp://, a typo) lands here: shown without its secrets.
    raise SourceError(f"source {shown_uri(uri)!r} not found: expected {ACCEPTED}")


def _open_camera(device: int | str) -> Capture:
    target: int | str = device
    if isinstance(device, str):
        # by-id / by-path symlinks point to a new /dev/videoN after a replug: resolve on every open.
        real = os.path.realpath(device)
        match = re.fullmatch(r"/dev/video(\d+)", real)
        # This OpenCV's V4L2 backend opens by index, not by name.
        target = int(match.group(1)) if match else real
    path = device if isinstance(device, str) else f"/dev/video{device}"
    # Checked first so a camera that is away costs no driver call (and no OpenCV warning) per retry.
    if os.name == "posix" and not os.path.exists(path):
        raise CaptureUnavailable(f"{path} does not exist (camera unplugged?)")
    for api in (cv2.CAP_V4L2, cv2.CAP_ANY):
        cap = cv2.VideoCapture(target, api)
        if cap.isOpened():
            # Drivers queue several buffers by default; with one, a grab returns a recent frame.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        cap.release()
    raise CaptureUnavailable(f"cannot open {path}: busy, or not a capture device")


def _open_stream(url: str, name: str) -> Capture:
    if url.lower().startswith("rtsp"):
        # RTSP over UDP smears frames on lossy Wi-Fi; TCP is what IP cameras are reliable with.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts)
    if not cap.isOpened():
        cap.release()
        raise CaptureUnavailable(f"cannot connect to {name}")
    return cap


def _open_file(path: Path) -> Capture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise CaptureUnavailable(f"cannot decode video file {path}: not a video, or a codec this OpenCV lacks")
    return cap


class _FolderCapture:
    """The image files of a folder in sorted name order, read like a video."""

    def __init__(self, folder: Path) -> None:
        # Listed on every open, so a looping folder picks up images added meanwhile.
        self._paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._paths:
            raise CaptureUnavailable(f"image folder {folder} holds no {', '.join(IMAGE_SUFFIXES)} files")
        self._next = 0

    def grab(self) -> bool:
        self._next += 1
        return self._next <= len(self._paths)

    def retrieve(self) -> tuple[bool, Any]:
        # IMREAD_COLOR already turns grayscale and BGRA files into BGR; None for unreadable files.
        image = cv2.imread(str(self._paths[self._next - 1]), cv2.IMREAD_COLOR)
        return image is not None, image

    def release(self) -> None:
        pass


class _Picamera2Capture:
    """A Raspberry Pi CSI camera through Picamera2, which only exists on a Pi (from apt)."""

    @classmethod
    def opener(cls, camera: int = 0) -> Callable[[], Capture]:
        """Import picamera2 (only here, and only when asked for); SourceError with the fix if absent."""
        try:
            import picamera2
        except ImportError as exc:
            raise SourceError(
                "source 'picamera2' needs the Picamera2 library: install python3-picamera2 with apt "
                "(sudo apt install python3-picamera2) and create the venv with --system-site-packages"
            ) from exc
        return partial(cls, picamera2, camera)

    def __init__(self, module: ModuleType, camera: int = 0) -> None:
        """camera: Picamera2's camera number, an index into Picamera2.global_camera_info()."""
        try:
            self._cam = module.Picamera2(camera)
        except (IndexError, RuntimeError, OSError) as exc:  # IndexError: no such camera is attached
            raise CaptureUnavailable(f"picamera2: no usable camera {camera} ({exc})") from exc
        try:
            # RGB888 is B, G, R in memory, i.e. OpenCV's BGR; queue=False makes each capture a
            # fresh frame rather than one that waited in Picamera2's request queue.
            self._cam.configure(self._cam.create_video_configuration(main={"format": "RGB888"}, queue=False))
            self._cam.start()
        except (RuntimeError, OSError) as exc:
            self._cam.close()
            raise CaptureUnavailable(f"picamera2: cannot start the camera ({exc})") from exc
        self._image: Any = None

    def grab(self) -> bool:
        try:
            job = self._cam.capture_array("main", wait=False)
            self._image = self._cam.wait(job, timeout=PICAMERA2_TIMEOUT_S)
        except (RuntimeError, TimeoutError, OSError):
            self._image = None
            return False
        return True

    def retrieve(self) -> tuple[bool, Any]:
        image, self._image = self._image, None
        return image is not None, image

    def release(self) -> None:
        try:
            self._cam.stop()
            self._cam.close()
        except (RuntimeError, OSError):
            pass  # the camera is already gone; nothing left to free
