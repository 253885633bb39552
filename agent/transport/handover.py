"""The publisher's side of the hand-over to paho: what was handed, what is retained, whether the outbox works.

Handed maps paho's message ids to what they carry for the current connection; RetainedStates keeps
the last retained message per topic for re-publishing on connect; OutboxFailures keeps the
outbox's error state, logging one line per failure streak rather than one per message.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from agent.transport.outbox import OutboxError

log = logging.getLogger("yolo_edge.mqtt")

# Retained.row while a QoS 1 retained message waits for the writer: the replay will carry it once
# stored, so a connect must not re-publish it from memory as well (outbox ids start at 1).
QUEUED = 0


class Retained(NamedTuple):
    payload: bytes
    qos: int
    row: int | None  # outbox row while the message may still be waiting there; QUEUED; None: memory only


class Handed:
    """paho message ids handed over in this connection -> ref: an outbox row (> 0), a held message (< 0), or None.

    A held message is one the outbox could not store (agent/transport/spool.py); its key is
    stored negated so one int says which of the two an acknowledgement settles.

    paho returns a message's mid only when publish() returns, but its network thread may
    already have read the PUBACK and called on_publish. We cannot hold one lock across
    publish() that on_publish also takes: paho calls on_publish while holding its own
    message lock, which publish() needs too (lock-order inversion, deadlock). So each mid
    is settled by whichever of the two sides comes second. Every successful publish()
    produces exactly one on_publish, so nothing lingers; a lost connection clears it all.
    Not thread-safe: the courier's lock guards it.
    """

    def __init__(self) -> None:
        self._refs: dict[int, int | None] = {}
        self._early: set[int] = set()
        self.outbox_inflight = 0  # outbox rows handed and not yet acknowledged

    def handed(self, mid: int, ref: int | None) -> bool:
        """Record a message paho accepted; True if its acknowledgement already came."""
        if mid in self._early:
            self._early.discard(mid)
            return True
        self._refs[mid] = ref
        self.outbox_inflight += ref is not None and ref > 0
        return False

    def acked(self, mid: int) -> tuple[bool, int | None]:
        """(known, ref): whether `mid` was recorded yet and, if so, what it acknowledges."""
        if mid in self._refs:
            ref = self._refs.pop(mid)
            self.outbox_inflight -= ref is not None and ref > 0
            return True, ref
        self._early.add(mid)
        return False, None

    def clear(self) -> None:
        self._refs.clear()
        self._early.clear()
        self.outbox_inflight = 0


class RetainedStates:
    """The last retained message per full topic, re-published on every connect (the broker may have lost it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, Retained] = {}

    def remember(self, topic: str, payload: bytes, qos: int, row: int | None) -> None:
        with self._lock:
            if payload:
                self._states[topic] = Retained(bytes(payload), qos, row)
            else:
                self._states.pop(topic, None)  # an empty retained message clears the topic

    def settle(self, topic: str, payload: bytes, row: int | None) -> None:
        """The writer stored (row) or could not store (None) the QUEUED message `payload` on `topic`."""
        with self._lock:
            state = self._states.get(topic)
            if state is not None and state.row == QUEUED and state.payload == payload:
                self._states[topic] = state._replace(row=row)

    def snapshot(self) -> list[tuple[str, Retained]]:
        with self._lock:
            return list(self._states.items())


class OutboxFailures:
    """Whether the outbox can be written, and how many writes failed; one log line per failure streak."""

    def __init__(self, path: object) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.errors = 0
        self.failing = False

    def failed(self, error: OutboxError) -> None:
        with self._lock:
            self.errors += 1
            first, self.failing = not self.failing, True
        if first:
            log.error("%s", error)

    def ok(self) -> None:
        with self._lock:
            was, self.failing = self.failing, False
        if was:
            log.info("outbox %s writable again", self.path)
