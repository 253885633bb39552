"""Commands that arrive over MQTT, handed to the frame loop: settings changes and snapshot requests.

paho calls the `on_*` methods on its network thread. They only check and queue; the frame
loop takes what is queued between two frames, so the detector is only ever touched by the
thread that runs it, and a change never lands in the middle of a frame.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from agent.control.remote_settings import SettingsChange, SettingsRejected, parse_settings, rejected_payload
from agent.transport.payloads import dumps

log = logging.getLogger("yolo_edge.commands")

MAX_PENDING_CHANGES = 16  # a flood of `set` messages is refused, not queued without bound


class CommandInbox:
    """The hand-off between paho's thread (on_set, on_snapshot_request) and the frame loop (take_*).

    names: the model's class id -> label, copied so the network thread never reads the detector.
    reply: publishes one `set/result` payload; called for rejections on the network thread.
    """

    def __init__(self, names: Mapping[int, str], reply: Callable[[bytes], None]) -> None:
        self._names = MappingProxyType(dict(names))
        self._reply = reply
        self._changes: queue.Queue[SettingsChange] = queue.Queue(MAX_PENDING_CHANGES)
        self._snapshot = threading.Event()

    def on_set(self, payload: bytes) -> None:
        """A `set` message: queue the change if all of it is valid, else reply why not."""
        try:
            self._changes.put_nowait(parse_settings(payload, self._names))
        except SettingsRejected as rejected:
            self._reject(rejected)
        except queue.Full:
            self._reject(SettingsRejected([f"{MAX_PENDING_CHANGES} changes are waiting for a frame; try again"], []))

    def use_names(self, names: Mapping[int, str]) -> None:
        """The labels `set` is checked against from now on (frame loop, when a deployed model takes over)."""
        self._names = MappingProxyType(dict(names))

    def reject(self, rejected: SettingsRejected) -> None:
        """Answer a queued change that cannot be applied after all (frame loop)."""
        self._reject(rejected)

    def on_snapshot_request(self, payload: bytes) -> None:
        """Any message on `snapshot/request`: one snapshot, however many requests come before it is taken."""
        self._snapshot.set()

    def take_changes(self) -> list[SettingsChange]:
        """Every queued change, oldest first (frame loop)."""
        changes: list[SettingsChange] = []
        while True:
            try:
                changes.append(self._changes.get_nowait())
            except queue.Empty:
                return changes

    def take_snapshot_request(self) -> bool:
        """True once per request (frame loop)."""
        if not self._snapshot.is_set():
            return False
        self._snapshot.clear()
        return True

    def _reject(self, rejected: SettingsRejected) -> None:
        log.warning("set rejected: %s", rejected)
        self._reply(dumps(rejected_payload(time.time(), rejected)))
