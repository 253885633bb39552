"""systemd's notify protocol end to end: the real agent, a real datagram socket, a camera that stalls.

The socket plays systemd: the agent gets NOTIFY_SOCKET and WATCHDOG_USEC exactly as a Type=notify
unit with WatchdogSec= would give them, and every datagram it sends is recorded with its arrival time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.system.notify import SystemdNotifier
from tests.agent.agent_process import MjpegServer

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "yolo-edge-agent.service"
WATCHDOG_USEC = 1_000_000  # 1 s: the agent pings every 0.25 to 0.5 s while frames flow
START_TIMEOUT_S = 60.0  # model load on a busy machine; the unit allows 120 s on a Pi


def timeout_stop_s() -> float:
    """The unit's TimeoutStopSec in seconds: a clean stop must fit in it or systemd kills the agent."""
    value = re.search(r"^TimeoutStopSec=(\d+)s?$", UNIT.read_text(), re.MULTILINE)
    assert value, "the unit sets no TimeoutStopSec in seconds"
    return float(value.group(1))


class NotifyListener:
    """A unix datagram socket standing in for systemd; records (monotonic time, message lines)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode().split("\n")))

    def times(self, line: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Arrival times of the messages holding `line` (exact, or a prefix ending in '=')."""
        with self._lock:
            found = [t for t, lines in self.messages if any(_matches(x, line) for x in lines)]
        return [t for t in found if since <= t <= until]

    def lines(self, prefix: str) -> list[str]:
        with self._lock:
            return [x for _, lines in self.messages for x in lines if x.startswith(prefix)]

    def wait_for(self, line: str, timeout: float, since: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.times(line, since):
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {line!r} within {timeout:g} s; received {self.messages!r}")

    def mark(self, timeout: float = 5.0) -> int:
        """Send a datagram of our own and wait until it is recorded; return its index in `messages`.

        The socket queues datagrams in the order they were sent, whoever sent them: once the mark is
        recorded, so is everything sent before it, however late this thread got to read them.
        """
        token = f"X_TEST_MARK={uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(token.encode(), self.address)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [i for i, (_, lines) in enumerate(self.messages) if token in lines]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"our own mark was not received within {timeout:g} s")

    def received(self, since: float = 0.0) -> list[tuple[float, list[str]]]:
        """The messages that arrived at `since` or later, in order."""
        with self._lock:
            return [(t, lines) for t, lines in self.messages if t >= since]

    def between(self, line: str, first: int, last: int) -> list[int]:
        """Indexes of the messages holding `line` strictly between message `first` and message `last`."""
        with self._lock:
            return [i for i, (_, lines) in enumerate(self.messages) if first < i < last and line in lines]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


def _matches(line: str, wanted: str) -> bool:
    return line.startswith(wanted) if wanted.endswith("=") else line == wanted


class Agent:
    """`yolo-edge-agent run --dry-run` as a child process; its stderr is kept for failure messages."""

    def __init__(self, model: Path, source: str, notify_socket: str, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_EDGE_", "NOTIFY_", "WATCHDOG_"))}
        env.pop("JOURNAL_STREAM", None)
        env.update(
            NOTIFY_SOCKET=notify_socket,
            WATCHDOG_USEC=str(WATCHDOG_USEC),
            YOLO_EDGE_STATS_INTERVAL="1",  # STATUS lines every second, as `systemctl status` shows them
            ORT_DISABLE_TELEMETRY="1",  # as the unit sets it
        )
        env.update(extra_env or {})
        command = [sys.executable, "-m", "agent.cli", "run", "--dry-run", "--model", str(model), "--source", source]
        self.started = time.monotonic()  # no datagram of this agent can arrive before
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.stderr):
                return
            assert self.process.poll() is None, f"the agent exited early: {self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r} within {timeout:g} s: {self.log()}")

    def log(self) -> str:
        return "\n".join(self.stderr[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(2.0)


@pytest.fixture
def stream() -> Iterator[MjpegServer]:
    # A stalled camera keeps the connection open and sends nothing: a read that blocks, unlike a
    # stopped server, which refuses at once.
    server = MjpegServer([cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()], fps=25)
    server.mode = "stall"
    server.start()
    yield server
    server.stop()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[tuple[NotifyListener, str]]:
    address = str(tmp_path / "notify.sock")
    listener = NotifyListener(address)
    yield listener, address
    listener.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[NotifyListener, str]]:
    name = f"yolo-edge-test-{uuid.uuid4().hex[:12]}"
    listener = NotifyListener("\0" + name)
    yield listener, "@" + name
    listener.close()


def frames_in_status(listener: NotifyListener) -> int:
    """The processed-frame count of the last STATUS= line that has one (`... , N frames`)."""
    counts = [int(m.group(1)) for s in listener.lines("STATUS=") if (m := re.search(r"(\d+) frames$", s))]
    return counts[-1] if counts else 0


def wait_for_more_frames(listener: NotifyListener, agent: Agent, what: str, timeout: float = 30.0) -> None:
    before = frames_in_status(listener)
    deadline = time.monotonic() + timeout
    while frames_in_status(listener) <= before:
        assert agent.process.poll() is None, agent.log()
        assert time.monotonic() < deadline, f"no new frames {what}: {agent.log()}"
        time.sleep(0.05)


def stats_periods(listener: NotifyListener, since: float) -> list[tuple[int, int, bool]]:
    """Each pair of consecutive `... N frames` STATUS lines that arrived after `since`, in order, as
    (frames at its start, frames at its end, whether a WATCHDOG=1 came between the two).

    The frame loop sends both, in order on one socket: equal counts mean it processed no frame in
    between, and a ping in between means it iterated meanwhile (one is due every loop iteration
    at least WatchdogSec/4 after the last, and a stats period is longer).
    """
    messages = listener.received(since)
    periods: list[tuple[int, int, bool]] = []
    frames: int | None = None
    pinged = False
    for _, lines in messages:
        pinged = pinged or "WATCHDOG=1" in lines
        for line in lines:
            if line.startswith("STATUS=") and (m := re.search(r"(\d+) frames$", line)):
                if frames is not None:
                    periods.append((frames, int(m.group(1)), pinged))
                frames, pinged = int(m.group(1)), False
    return periods


def wait_for_pings_without_frames(
    listener: NotifyListener, agent: Agent, since: float, periods: int, what: str, timeout: float = 30.0
) -> None:
    """Wait for `periods` stats periods in a row after `since` without a frame, each with a ping in it:
    what systemd must see while the camera stalls or is away (the loop runs; it has nothing to do)."""
    deadline = time.monotonic() + timeout
    while True:
        run = 0
        for start, end, pinged in stats_periods(listener, since):
            run = run + 1 if start == end and pinged else 0
            if run >= periods:
                return
        assert agent.process.poll() is None, f"the agent exited {what}: {agent.log()}"
        assert time.monotonic() < deadline, f"no {periods} pinged periods without frames {what}: {listener.messages}"
        time.sleep(0.05)


def wait_for_pings_with_frames(listener: NotifyListener, agent: Agent, since: float, timeout: float = 30.0) -> None:
    """Wait for a stats period after `since` in which frames were processed and the watchdog pinged."""
    deadline = time.monotonic() + timeout
    while not any(end > start and pinged for start, end, pinged in stats_periods(listener, since)):
        assert agent.process.poll() is None, f"the agent exited while frames flow: {agent.log()}"
        assert time.monotonic() < deadline, f"no pinged period with frames: {listener.messages}"
        time.sleep(0.05)


def assert_pings_not_too_often(listener: NotifyListener, agent: Agent) -> None:
    """At most one ping per WatchdogSec/4 since the agent started: however late some arrived, every one
    was sent after `agent.started`, so there cannot be more than the time allows."""
    pings = listener.times("WATCHDOG=1")
    allowed = (time.monotonic() - agent.started) / (WATCHDOG_USEC / 1e6 / 4) + 1
    assert pings and len(pings) <= allowed, f"{len(pings)} pings, at most {allowed:.0f} at one per WatchdogSec/4"


def test_ready_after_first_frame_and_the_watchdog_fed_while_the_camera_stalls_or_goes_away(
    fixture_onnx: Path, stream: MjpegServer, path_listener: tuple[NotifyListener, str]
) -> None:
    listener, address = path_listener
    agent = Agent(fixture_onnx, stream.url, address)
    try:
        # The model is loaded but the camera has delivered nothing: not ready yet, but the loop runs.
        # Asserted by what the agent says, in order, not by the clock: a stats period with no frame and
        # a ping; a READY=1 sent too early would have come before its closing STATUS.
        agent.wait_for_log("model loaded", START_TIMEOUT_S)
        wait_for_pings_without_frames(listener, agent, 0.0, 1, "before the first frame")
        assert listener.times("READY=1") == [], "READY=1 before the first frame"

        stream.mode = "good"
        ready_at = listener.wait_for("READY=1", 20.0)
        assert any("first frame processed" in s for s in listener.lines("STATUS=")), listener.messages
        wait_for_pings_with_frames(listener, agent, ready_at)
        assert any("fps" in s and "fp32" in s for s in listener.lines("STATUS=")), listener.lines("STATUS=")

        # The camera stalls (connected, sending nothing): the loop goes on, and so do the pings.
        stream.mode = "stall"
        stalled_at = time.monotonic()
        wait_for_pings_without_frames(listener, agent, stalled_at, 1, "while the camera stalls")
        stream.mode = "good"
        wait_for_more_frames(listener, agent, "after the stall")

        # The camera goes away (a reboot) for three stats periods of 1 s (3x WatchdogSec) in a row, each
        # with a ping: systemd must not restart a healthy agent.
        stream.stop()
        gone_at = time.monotonic()
        wait_for_pings_without_frames(listener, agent, gone_at, 3, "while the camera is away")
        agent.wait_for_log("source lost:", 10.0)
        stream.start()
        wait_for_more_frames(listener, agent, "after the camera came back")
        assert_pings_not_too_often(listener, agent)

        agent.process.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 5.0)
        assert agent.process.wait(timeout_stop_s()) == 0, agent.log()
        assert len(listener.times("READY=1")) == 1, "READY=1 sent more than once"
    finally:
        agent.stop()


def test_ready_without_a_frame_after_the_ready_timeout_says_it_waits_for_the_camera(
    fixture_onnx: Path, stream: MjpegServer, path_listener: tuple[NotifyListener, str]
) -> None:
    listener, address = path_listener
    agent = Agent(fixture_onnx, stream.url, address, {"YOLO_EDGE_AGENT_READY_TIMEOUT_S": "2"})
    try:
        listener.wait_for("READY=1", START_TIMEOUT_S)
        waiting = [s for s in listener.lines("STATUS=") if "waiting for the camera" in s]
        assert waiting, listener.messages
        agent.wait_for_log("reporting ready, waiting for the camera", 5.0)

        stream.mode = "good"
        deadline = time.monotonic() + 20
        while not any("first frame processed" in s for s in listener.lines("STATUS=")):
            assert time.monotonic() < deadline, f"no STATUS= for the first frame: {listener.messages}"
            time.sleep(0.05)
        assert len(listener.times("READY=1")) == 1, "READY=1 sent again for the first frame"
    finally:
        agent.stop()


def test_abstract_socket_and_clean_stop_while_the_camera_is_stalled(
    fixture_onnx: Path, stream: MjpegServer, abstract_listener: tuple[NotifyListener, str]
) -> None:
    listener, address = abstract_listener
    stream.mode = "good"
    agent = Agent(fixture_onnx, stream.url, address)
    try:
        listener.wait_for("READY=1", START_TIMEOUT_S)
        listener.wait_for("WATCHDOG=1", 5.0)
        stream.mode = "stall"
        wait_for_pings_without_frames(listener, agent, time.monotonic(), 1, "while the camera stalls")
        # The source thread is stuck in a blocking read; the stop must still fit in TimeoutStopSec.
        stopped_at = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 5.0, since=stopped_at)
        assert agent.process.wait(timeout_stop_s()) == 0, agent.log()
    finally:
        agent.stop()


# --- SystemdNotifier on its own ----------------------------------------------------------------


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on `sock`, decoded."""
    sock.settimeout(0.2)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_without_notify_socket_every_call_does_nothing() -> None:
    notifier = SystemdNotifier(env={})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("x")
    notifier.status("x")
    notifier.alive()
    notifier.stopping()
    notifier.close()


def test_at_sign_means_the_abstract_namespace() -> None:
    name = f"yolo-edge-test-{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier(env={"NOTIFY_SOCKET": "@" + name})
        notifier.ready("running fp32")
        notifier.ready("again")  # READY is sent once
        notifier.close()
        assert received(sock) == ["READY=1\nSTATUS=running fp32"]


def test_path_socket_and_watchdog_rate(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
        notifier = SystemdNotifier(env=env)
        assert notifier.watchdog_interval_s == pytest.approx(0.5)
        for _ in range(3):
            notifier.alive()  # at most one ping per WatchdogSec/4
        time.sleep(0.3)
        notifier.alive()
        notifier.stopping()
        notifier.close()
        assert received(sock) == ["WATCHDOG=1", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        # systemd sets WATCHDOG_PID to the main process; a child that inherited the variables must not ping.
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
        notifier = SystemdNotifier(env=env)
        assert notifier.watchdog_interval_s is None
        notifier.alive()
        notifier.close()
        assert received(sock) == []


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": "1000000"})
    assert notifier.enabled
    notifier.ready("x")
    notifier.alive()
    notifier.close()


class HangingDetector:
    """The real detector, until `hang` is set: then detect() blocks, as a wedged inference would."""

    def __init__(self, detector: object) -> None:
        self._detector = detector
        self.hang = threading.Event()
        self.hanging = threading.Event()
        self.release = threading.Event()

    def detect(self, image: np.ndarray) -> object:
        if self.hang.is_set():
            self.hanging.set()
            self.release.wait(30)
        return self._detector.detect(image)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._detector, name)


def test_a_loop_that_stops_iterating_stops_the_pings(
    fixture_onnx: Path, sample_video: tuple[Path, list], path_listener: tuple[NotifyListener, str]
) -> None:
    import io

    from agent.pipeline.detector import load_detector
    from agent.pipeline.sources import open_source
    from agent.runtime.loop import LoopHooks, LoopSettings
    from agent.transport.publisher import StdoutPublisher
    from tests.agent.loop_rig import frame_loop

    listener, address = path_listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(env=env)
    detector = HangingDetector(load_detector(fixture_onnx, "fp32", 1)[0])
    with open_source(str(sample_video[0]), loop=True) as source:
        loop = frame_loop(
            source,
            detector,  # type: ignore[arg-type]
            StdoutPublisher("yolo-edge/test", io.StringIO()),
            LoopSettings(stats_interval=60.0),
            hooks=LoopHooks(on_tick=notifier.alive),
        )
        thread = threading.Thread(target=loop.run, name="frame-loop", daemon=True)
        thread.start()
        try:
            first = listener.wait_for("WATCHDOG=1", 20.0)
            listener.wait_for("WATCHDOG=1", 5.0, since=first + 0.01)
            detector.hang.set()
            assert detector.hanging.wait(10), "the detector was never called again"
            # Marks of our own, by order rather than arrival times: every ping the loop sent before it
            # hung is recorded before the first, and any sent during twice WatchdogSec (systemd's wait,
            # twice over: the length of what is asserted, not a wait for something) before the second.
            hung = listener.mark()
            time.sleep(2 * WATCHDOG_USEC / 1e6)
            late = listener.between("WATCHDOG=1", hung, listener.mark())
            assert late == [], f"{len(late)} pings while inference hung: systemd would never restart it"
            detector.release.set()
            listener.wait_for("WATCHDOG=1", 10.0, since=time.monotonic())
        finally:
            detector.release.set()
            loop.stop.set()
            thread.join(10)
            notifier.close()
    assert not thread.is_alive()
