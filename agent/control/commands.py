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
from dataclasses import replace
from types import MappingProxyType

from agent.control.remote_settings import SettingsChange, SettingsRejected, parse_settings, rejected_payload
from agent.control.response_topics import ResponseTopics
from agent.transport.encoding import dumps
from agent.transport.publisher import ReplyTo
from agent.transport.topics import SET_RESULT

log = logging.getLogger("yolo_edge.commands")

MAX_PENDING_CHANGES = 16  # a flood of `set` messages is refused, not queued without bound


class CommandInbox:
    """The hand-off between paho's thread (on_set, on_snapshot_request) and the frame loop (take_*).

    names: the model's class id -> label, copied so the network thread never reads the detector.
    reply: publishes one `set/result` payload; called for rejections on the network thread.
    responses: where an MQTT 5 command's response topic is answered as well (None: not over MQTT).
    """

    def __init__(
        self,
        names: Mapping[int, str],
        reply: Callable[[bytes], None],
        responses: ResponseTopics | None = None,
    ) -> None:
        self._names = MappingProxyType(dict(names))
        self._reply = reply
        self._responses = responses
        self._changes: queue.Queue[SettingsChange] = queue.Queue(MAX_PENDING_CHANGES)
        self._snapshot = threading.Event()

    def on_set(self, payload: bytes, reply_to: ReplyTo | None = None) -> None:
        """A `set` message: queue the change if all of it is valid, else reply why not.

        reply_to: the MQTT 5 response topic and correlation data the message carried, answered too
        when it lies in the device's reply subtree (response_topics.py).
        """
        reply_to = self._responses.checked(reply_to, "set", SET_RESULT) if self._responses is not None else None
        try:
            change = replace(parse_settings(payload, self._names), reply_to=reply_to)
        except SettingsRejected as rejected:
            self.reject(rejected, reply_to)
            return
        try:
            self._changes.put_nowait(change)
        except queue.Full:
            busy = f"{MAX_PENDING_CHANGES} changes are waiting for a frame; try again"
            self.reject(SettingsRejected([busy], [], change.request_id), reply_to)

    def use_names(self, names: Mapping[int, str]) -> None:
        """The labels `set` is checked against from now on (frame loop, when a deployed model takes over)."""
        self._names = MappingProxyType(dict(names))

    def reject(self, rejected: SettingsRejected, reply_to: ReplyTo | None = None) -> None:
        """Answer a change that cannot be applied (network thread: invalid; frame loop: no longer valid)."""
        log.warning("set rejected: %s", rejected)
        self.answer(dumps(rejected_payload(time.time(), rejected)), reply_to)

    def answer(self, payload: bytes, reply_to: ReplyTo | None) -> None:
        """One `set/result` payload, also sent to the command's response topic when it named one (checked by on_set)."""
        self._reply(payload)
        if reply_to is not None and self._responses is not None:
            self._responses.send(reply_to, payload)

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
