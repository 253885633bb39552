"""Numbered messages (events, objects) on their way to the publisher, held in memory while it refuses them.

A full or read-only disk must not stop detection nor lose a message silently: what the outbox
cannot take is retried with the next one, in order, bounded, and what the bound drops is counted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.transport.publisher import HELD_IN_MEMORY_MAX, Publisher, StoreError

log = logging.getLogger("yolo_edge.agent")


@dataclass(frozen=True)
class Numbered:
    """A message for `topic` whose payload is built once its seq is known."""

    topic: str
    build: Callable[[int], bytes]


class SequencedQueue:
    def __init__(self, publisher: Publisher, max_held: int = HELD_IN_MEMORY_MAX) -> None:
        self.publisher = publisher
        self.max_held = max_held
        self._held: deque[Numbered] = deque()
        self._failing = False
        self.lost = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def send(self, messages: list[Numbered]) -> None:
        """Hand `messages` to the publisher after those held before them, in order."""
        self._held.extend(messages)
        while self._held:
            message = self._held[0]
            try:
                self.publisher.publish_sequenced(message.topic, message.build, qos=1)
            except StoreError as error:
                if not self._failing:
                    log.warning("events held in memory: %s", error)
                    self._failing = True
                while len(self._held) > self.max_held:
                    self._held.popleft()
                    self.lost += 1
                return
            self._held.popleft()
            if self._failing:
                log.info("outbox writable again; held events sent")
                self._failing = False
