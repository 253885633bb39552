"""The publisher's side of the outbox hand-over: what was handed to paho, what was acknowledged.

Handed maps paho's message ids to outbox rows for the current connection; OutboxLink deletes
acknowledged rows in batches and keeps the outbox's error state, logging one line per failure
streak rather than one per message.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from agent.transport.outbox import Outbox, OutboxError

log = logging.getLogger("yolo_edge.mqtt")


class Retained(NamedTuple):
    payload: bytes
    qos: int
    row: int | None  # outbox row while the message may still be waiting there


class Handed:
    """paho message ids handed over in this connection -> outbox row (None: not from the outbox).

    paho returns a message's mid only when publish() returns, but its network thread may
    already have read the PUBACK and called on_publish. We cannot hold one lock across
    publish() that on_publish also takes: paho calls on_publish while holding its own
    message lock, which publish() needs too (lock-order inversion, deadlock). So each mid
    is settled by whichever of the two sides comes second. Every successful publish()
    produces exactly one on_publish, so nothing lingers; a lost connection clears it all.
    """

    def __init__(self) -> None:
        self._rows: dict[int, int | None] = {}
        self._early: set[int] = set()
        self.outbox_inflight = 0  # outbox rows handed and not yet acknowledged

    def handed(self, mid: int, row: int | None) -> bool:
        """Record a message paho accepted; True if its acknowledgement already came."""
        if mid in self._early:
            self._early.discard(mid)
            return True
        self._rows[mid] = row
        self.outbox_inflight += row is not None
        return False

    def acked(self, mid: int) -> int | None:
        """The outbox row that `mid` acknowledges, if known yet."""
        if mid in self._rows:
            row = self._rows.pop(mid)
            self.outbox_inflight -= row is not None
            return row
        self._early.add(mid)
        return None

    def clear(self) -> None:
        self._rows.clear()
        self._early.clear()
        self.outbox_inflight = 0


class OutboxLink:
    """The outbox as the publisher uses it: batched deletes of acknowledged rows and its error state.

    Its lock is its own and never held while the outbox is called, so paho's thread and the
    frame loop can both report acknowledgements and failures at any time.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()
        self._acked_rows: list[int] = []  # acknowledged, not yet deleted from the outbox
        self.errors = 0
        self._failing = False

    def acknowledged(self, row: int) -> int:
        """Note an acknowledged row for deletion; the number of rows now waiting to be deleted."""
        with self._lock:
            self._acked_rows.append(row)
            return len(self._acked_rows)

    def waiting(self) -> int:
        with self._lock:
            return len(self._acked_rows)

    def remove(self, row: int) -> None:
        """Delete one row now (with any acknowledged rows still waiting)."""
        self.acknowledged(row)
        self.remove_acked()

    def remove_acked(self) -> None:
        with self._lock:
            rows, self._acked_rows = self._acked_rows, []
        if not rows:
            return
        try:
            self.outbox.remove_many(rows)
        except OutboxError as error:
            # Tried again with the next acknowledgement (a full disk takes deletes too). Forgotten,
            # they would stay in the file and go out a second time after the next reconnect or restart.
            with self._lock:
                self._acked_rows = rows + self._acked_rows
            self.failed(error)

    def still_pending(self, row: int) -> bool:
        """True if `row` is still in the outbox (not yet acknowledged and deleted)."""
        try:
            first = self.outbox.pending(after_id=row - 1, limit=1)
        except OutboxError:
            return False
        return bool(first) and first[0].id == row

    def failed(self, error: OutboxError) -> None:
        with self._lock:
            self.errors += 1
            first, self._failing = not self._failing, True
        if first:
            log.error("%s", error)

    def ok(self) -> None:
        if self._failing:
            with self._lock:
                self._failing = False
            log.info("outbox %s writable again", self.outbox.path)
