"""QoS 1 messages on their way into the outbox: the writer's queue, sequence numbers, and what the outbox refused.

publish() and publish_sequenced() only append here and return, so the frame loop never waits
for an fsync; the courier thread (agent/transport/courier.py) stores what is queued in one
transaction per batch and only then hands it to paho: nothing is sent that is not stored.

Sequence numbers are given out here, from the counter the outbox stored, and stored with their
message in one transaction. A crash can lose numbers that were queued and not yet stored; those
never reached the broker (only stored rows are sent), so the next run giving them out again
repeats nothing anyone saw.

When the outbox cannot be written (full disk), a plain QoS 1 message is held in memory
(bounded) and still sent while connected; a numbered one stays queued until it can be stored,
since sending it unstored could let a crash hand its number out twice. While one waits so,
publish_sequenced() raises OutboxError, which is how the frame loop knows to hold its events.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.transport.outbox import NewMessage, Outbox, OutboxError

__all__ = ["Held", "Spool"]


@dataclass(frozen=True)
class Held:
    """A QoS 1 message the outbox could not store, sent from memory; key: its id among held messages."""

    key: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Spool:
    """The bounded queue in front of the outbox and the bounded store of held messages; thread-safe.

    queue_limit: messages waiting for the writer at most; past it publish() drops (counted) and
    publish_sequenced() raises. held_limit: held messages at most; past it the oldest is dropped (counted).
    wake: called after every append, so the writer does not poll.
    """

    def __init__(self, outbox: Outbox, queue_limit: int, held_limit: int, wake: Callable[[], None]) -> None:
        self.outbox = outbox
        self.queue_limit = queue_limit
        self.held_limit = held_limit
        self._wake = wake
        self._lock = threading.Lock()
        self._queue: deque[NewMessage] = deque()  # in publish order, which is seq order per counter
        self._numbered = 0  # of _queue: messages with a seq
        self._held: dict[int, Held] = {}  # insertion order is publish order
        self._next_key = 1
        self._seqs: dict[str, int] = {}  # counter -> last seq given out (loaded from the outbox on first use)
        self._refused = False  # the last store failed (cleared by the next that succeeds)
        self.dropped_overflow = 0  # messages dropped because a memory bound was reached

    # -- the publishing side ---------------------------------------------------------------------

    def put(self, message: NewMessage) -> bool:
        """Queue one message for the writer; False (and counted) if the queue is full."""
        with self._lock:
            if len(self._queue) >= self.queue_limit:
                self.dropped_overflow += 1
                return False
            self._queue.append(message)
        self._wake()
        return True

    def put_sequenced(
        self,
        topic: str,
        build: Callable[[int], bytes],
        qos: int,
        retain: bool,
        counter: str,
        numbered: Callable[[bytes], None] | None = None,
    ) -> int:
        """Number `build(seq)` with the next seq of `counter` and queue it; return seq.

        numbered(payload) runs just before it is queued (the publisher notes retained state there).

        Raises OutboxError, taking no number, while numbered messages wait for an outbox that
        refused them or when the queue is full: the caller holds the message and tries again.
        """
        self._load_counter(counter)
        with self._lock:
            if self._refused and self._numbered:
                raise OutboxError(f"outbox {self.outbox.path}: cannot store messages; {self._numbered} wait in memory")
            if len(self._queue) >= self.queue_limit:
                raise OutboxError(f"outbox {self.outbox.path}: {len(self._queue)} messages wait for the writer")
            seq = self._seqs[counter] + 1
            payload = bytes(build(seq))  # may raise: then no number was taken
            if numbered is not None:
                numbered(payload)
            self._seqs[counter] = seq
            self._queue.append(NewMessage(topic, payload, qos, retain, counter, seq))
            self._numbered += 1
        self._wake()
        return seq

    def load_counters(self) -> None:
        """Read every stored counter now, so that no publish_sequenced() has to wait for the outbox's lock."""
        stored = self.outbox.counters()
        with self._lock:
            for name, value in stored.items():
                self._seqs.setdefault(name, value)

    def _load_counter(self, counter: str) -> None:
        """Numbers come from memory; the stored counter is read once per counter and run."""
        with self._lock:
            if counter in self._seqs:
                return
        # Read without our lock: the writer calls stored() while holding the outbox's.
        last = self.outbox.counter(counter)
        with self._lock:
            self._seqs.setdefault(counter, last)

    # -- the writer's side -----------------------------------------------------------------------

    def take(self) -> list[NewMessage]:
        """What is queued now, oldest first; it stays queued until stored() or refused() says what became of it."""
        with self._lock:
            return list(self._queue)

    def stored(self, count: int) -> None:
        """The first `count` queued messages are in the outbox now."""
        with self._lock:
            for _ in range(count):
                self._numbered -= self._queue.popleft().seq is not None
            self._refused = False

    def refused(self, count: int) -> list[NewMessage]:
        """The outbox could not store the first `count` queued messages; return the plain ones, now held."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(count)]
            # Numbered ones go back to the front, in order, to be stored once the outbox works again.
            self._queue.extendleft(reversed([m for m in batch if m.seq is not None]))
            plain = [m for m in batch if m.seq is None]
            for message in plain:
                self._held[self._next_key] = Held(
                    self._next_key, message.topic, message.payload, message.qos, message.retain
                )
                self._next_key += 1
            overflow = len(self._held) - self.held_limit
            for key in list(self._held)[: max(0, overflow)]:
                del self._held[key]
                self.dropped_overflow += 1
            self._refused = True
            return plain

    # -- the sending side ------------------------------------------------------------------------

    def held(self) -> list[Held]:
        with self._lock:
            return list(self._held.values())

    def forget(self, key: int) -> None:
        """The broker acknowledged held message `key`."""
        with self._lock:
            self._held.pop(key, None)

    # -- figures ---------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages waiting for the writer (not yet in the outbox)."""
        return len(self._queue)

    @property
    def held_count(self) -> int:
        return len(self._held)

    @property
    def refusing(self) -> bool:
        """The outbox refused the last batch and numbered messages wait for it: the writer should retry."""
        with self._lock:
            return self._refused and self._numbered > 0
