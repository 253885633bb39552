"""systemd's notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

No libsystemd: the protocol is a unix datagram of newline-separated
KEY=VALUE lines. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("yolo_edge.notify")


class SystemdNotifier:
    """READY, STATUS, WATCHDOG and STOPPING messages for a Type=notify unit."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace, spelled with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s = self._watchdog_interval(env)
        self._last_ping = 0.0
        self._ready = False

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Ping at half of WatchdogSec, as sd_watchdog_enabled() advises; None when not watched."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as error:  # systemd gone or socket unreachable: the service still runs
            log.debug("notify failed: %s", error)

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self, status: str) -> None:
        """Once: the model is loaded and the first frame was processed (or the camera is late)."""
        if not self._ready:
            self._ready = True
            self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def alive(self) -> None:
        """Ping the watchdog, at most twice per WatchdogSec. Called on every iteration of the frame loop,
        idle ones included: a camera that is away is the source's business, while a loop that stops
        iterating (an inference that hangs, a deadlock) stops the pings and systemd restarts us."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s / 2:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
