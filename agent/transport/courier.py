"""The courier: the one thread between the outbox and paho.

Each round it stores what the spool queued and deletes what the broker acknowledged, in one
transaction (group commit: one fsync for everything that piled up during the last one), then,
while connected, hands stored rows to paho in id order. Neither the frame loop nor paho's
network thread ever waits for the disk: paho's callbacks only record state here and wake it.

After a reconnect it announces `status`, re-publishes the retained state and replays the
backlog in batches, keeping at most `window` outbox rows in paho's hands, so a 10,000-row
backlog drains at the broker's pace while the frame loop's own messages queue behind it.
"""

from __future__ import annotations

import enum
import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from agent.transport import topics
from agent.transport.handover import QUEUED, Handed, OutboxFailures, RetainedStates
from agent.transport.outbox import Outbox, OutboxError
from agent.transport.spool import Spool

__all__ = ["Courier"]

log = logging.getLogger("yolo_edge.mqtt")

_BATCH = 500  # outbox rows read per query while handing over a backlog
_RETRY_S = 0.5  # how soon a refused store is tried again (a full disk may have room again)
_IDLE_S = 1.0  # a round at least this often, whatever woke it or not


class Sent(enum.Enum):
    SENT = "sent"
    UNSENDABLE = "unsendable"  # paho refuses it for good (invalid topic, oversized payload): dropped
    NO_CONNECTION = "no connection"


class Courier:
    """Owns the hand-over to paho for one publisher. start() once; callbacks may come from any thread."""

    def __init__(
        self,
        client: mqtt.Client,
        outbox: Outbox,
        spool: Spool,
        retained: RetainedStates,
        status_topic: str,
        window: int,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.spool = spool
        self.retained = retained
        self.status_topic = status_topic
        self.window = max(1, window)
        self.failures = OutboxFailures(outbox.path)
        self.progress = threading.Event()  # set after every round and acknowledgement; close() waits on it
        # _hand_lock: a connect drops paho's leftovers and starts a new generation under it, and every
        # QoS 1 hand-over checks the generation under it, so nothing handed for one connection leaks
        # into the next (it would arrive twice). Held only around paho calls, never around the disk.
        self._hand_lock = threading.Lock()
        # _cond guards the state below; never held while calling paho or the outbox.
        self._cond = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._connected = False
        self._generation = 0  # bumped by every connect
        self._closing = False
        self._handed = Handed()
        self._acked_rows: list[int] = []  # acknowledged, deleted with the next store
        self._stopped_for = 0  # generation in which `stopped` was handed
        self._status_info: mqtt.MQTTMessageInfo | None = None
        self.dropped_unsendable = 0
        # The courier thread's own.
        self._served = 0  # generation whose status, retained state and replay have begun
        self._upto = 0  # highest outbox id handed in the served generation
        self._held_handed: set[int] = set()
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-courier", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def close_requested(self) -> None:
        """From now on a connection announces `stopped`; the current one gets it in the next round."""
        with self._cond:
            self._closing = True
        self.wake()

    def stop(self, timeout: float) -> None:
        """End the thread after one last store (queued messages, acknowledged rows); wait up to `timeout`."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is None:
            self._store()  # never started: store here what was published before start()
        else:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("outbox writer still busy after %.1f s; what it had not stored is lost", timeout)

    # -- from paho's network thread ------------------------------------------------------------

    def connected(self) -> None:
        with self._hand_lock:
            # paho keeps its own copy of every QoS 1 message left unacknowledged by the previous
            # connection and re-sends it right after on_connect. The replay re-sends those rows in
            # order, so paho's copies would only arrive twice and out of order.
            self.client.drop_out_messages()
            with self._cond:
                self._connected = True
                self._generation += 1
                self._handed.clear()
        self.wake()

    def disconnected(self) -> None:
        with self._cond:
            self._connected = False
        self.wake()

    def acked(self, mid: int) -> None:
        """paho's on_publish: memory only (paho holds its message lock while calling it)."""
        with self._cond:
            known, ref = self._handed.acked(mid)
            if known and ref is not None:
                self._settle(ref)
            self._dirty = True
            self._cond.notify()
        self.progress.set()

    # -- from the frame loop -------------------------------------------------------------------

    def send_now(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """QoS 0 straight to paho if connected (order against QoS 1 does not matter); True if paho took it."""
        with self._cond:
            if not self._connected:
                return False
        return self._hand(topic, payload, qos, retain, None)[0] is Sent.SENT

    # -- figures -------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def inflight(self) -> int:
        with self._cond:
            return self._handed.outbox_inflight

    def stopped_acknowledged(self) -> bool:
        """close(): `stopped` was acknowledged on the current connection, or there is none to tell."""
        with self._cond:
            if not self._connected:
                return True
            info = self._status_info if self._stopped_for == self._generation else None
        return info is not None and info.is_published()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dirty or self._stopping, _RETRY_S if self.spool.refusing else _IDLE_S)
                self._dirty = False
                stopping = self._stopping
            try:
                self._store()
                if stopping:
                    return
                self._send()
            except Exception:
                # A bug here must not end the thread: nothing would be stored or sent any more.
                log.exception("outbox courier round failed")
            self.progress.set()

    def _store(self) -> None:
        batch = self.spool.take()
        with self._cond:
            acked, self._acked_rows = self._acked_rows, []
        if not batch and not acked:
            if not self.outbox.available:
                self._reopen()  # nothing to store, but events may wait for the numbers the file holds
            return
        try:
            ids = self.outbox.store(batch, acked, on_commit=lambda: self.spool.stored(len(batch)))
        except OutboxError as error:
            # Acknowledged rows are deleted with the next store that works; forgotten, they would go out again.
            with self._cond:
                self._acked_rows = acked + self._acked_rows
            self.failures.failed(error)
            for message in self.spool.refused(len(batch)):
                if message.retain:
                    self.retained.settle(message.topic, message.payload, None)
            return
        self.failures.ok()
        for message, row in zip(batch, ids, strict=True):
            if message.retain:
                self.retained.settle(message.topic, message.payload, row)

    def _reopen(self) -> None:
        """The file could not be opened (a full disk at start, no room for a fresh one): try again."""
        try:
            self.outbox.reopen()
        except OutboxError as error:
            self.failures.failed(error)
            return
        if self.outbox.available:
            self.failures.ok()

    def _send(self) -> None:
        with self._cond:
            if not self._connected:
                return
            generation, closing = self._generation, self._closing
        if generation != self._served:
            self._served, self._upto = generation, 0
            self._held_handed.clear()
            self._announce(generation, topics.STOPPED if closing else topics.ONLINE)
            self._republish_retained(generation)
        elif closing and self._stopped_for != generation:
            self._announce(generation, topics.STOPPED)
        self._replay(generation)
        self._send_held(generation)

    def _announce(self, generation: int, status: bytes) -> None:
        with self._hand_lock:
            if not self._current(generation):
                return
            _, info = self._hand(self.status_topic, status, 1, True, None)
        with self._cond:
            self._status_info = info
            if status == topics.STOPPED:
                self._stopped_for = generation

    def _republish_retained(self, generation: int) -> None:
        """The broker may have restarted without persistence: send the retained state again."""
        for topic, state in self.retained.snapshot():
            # Still in the outbox (or on its way there): the replay carries it; sending it here too
            # would deliver it twice and, worse, an older one after it.
            if state.row == QUEUED or (state.row is not None and self._still_pending(state.row)):
                continue
            with self._hand_lock:
                if not self._current(generation):
                    return
                self._hand(topic, state.payload, state.qos, True, None)

    def _replay(self, generation: int) -> None:
        """Hand stored rows after the watermark, keeping at most `window` in paho's hands."""
        while True:
            room = self.window - self.inflight
            if room <= 0:
                return  # the next acknowledgement wakes us
            limit = min(room, _BATCH)
            try:
                batch = self.outbox.pending(after_id=self._upto, limit=limit)
            except OutboxError as error:
                self.failures.failed(error)
                return
            with self._hand_lock:
                for message in batch:
                    if not self._current(generation):
                        return
                    sent, _ = self._hand(message.topic, message.payload, message.qos, message.retain, message.id)
                    if sent is Sent.NO_CONNECTION:
                        return  # the next connect starts again from the oldest row
                    self._upto = message.id
            if len(batch) < limit:
                return

    def _send_held(self, generation: int) -> None:
        for held in self.spool.held():
            if held.key in self._held_handed:
                continue
            with self._hand_lock:
                if not self._current(generation):
                    return
                sent, _ = self._hand(held.topic, held.payload, held.qos, held.retain, -held.key)
            if sent is Sent.NO_CONNECTION:
                return
            self._held_handed.add(held.key)

    # -- helpers -------------------------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        with self._cond:
            return self._connected and self._generation == generation

    def _hand(
        self, topic: str, payload: bytes, qos: int, retain: bool, ref: int | None
    ) -> tuple[Sent, mqtt.MQTTMessageInfo | None]:
        """Give one message to paho. ref: outbox row (> 0), held message (< 0) or None."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as error:
            # A message paho can never send must not block the ones behind it forever.
            log.error("dropping a message on %r that paho cannot send: %s", topic, error)
            with self._cond:
                self.dropped_unsendable += 1
                if ref is not None:
                    self._settle(ref)
                    self._dirty = True
            return Sent.UNSENDABLE, None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # NO_CONN: paho keeps a QoS 1 copy, but the next connect drops it; the replay re-sends.
            return Sent.NO_CONNECTION, None
        with self._cond:
            if self._handed.handed(info.mid, ref) and ref is not None:
                self._settle(ref)
                self._dirty = True
        return Sent.SENT, info

    def _settle(self, ref: int) -> None:
        """Under _cond: the broker has `ref` (or it was dropped): forget it."""
        if ref > 0:
            self._acked_rows.append(ref)
        else:
            self.spool.forget(-ref)

    def _still_pending(self, row: int) -> bool:
        try:
            first = self.outbox.pending(after_id=row - 1, limit=1)
        except OutboxError:
            return False
        return bool(first) and first[0].id == row
