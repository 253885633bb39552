"""The production path into the outbox without a broker: the spool numbers and queues, the courier's thread stores."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.transport.courier import Courier
from agent.transport.handover import RetainedStates
from agent.transport.outbox import Outbox
from agent.transport.spool import Spool


class SpoolWriter:
    """The spool in front of `outbox` and the courier's thread storing what it queues, wired as MqttPublisher does.

    Its paho client never connects: nothing is sent or acknowledged, so every stored row stays pending.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.spool = Spool(outbox, queue_limit=1000, held_limit=100, wake=lambda: self.courier.wake())
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="spool-writer")
        self.courier = Courier(client, outbox, self.spool, RetainedStates(), "yolo-edge/test/status", window=1)
        self.spool.load_counters()  # as the publisher's start() does
        self.courier.start()

    def sequenced(self, counter: str, build: Callable[[int], bytes]) -> int:
        """Number `build(seq)` by `counter` and queue it on topic `counter`, as publish_sequenced does; its seq."""
        return self.spool.put_sequenced(counter, build, qos=1, retain=False, counter=counter)

    def wait_stored(self, timeout: float = 10.0) -> None:
        """Wait until the courier stored everything queued so far."""
        deadline = time.monotonic() + timeout
        while self.spool.queued:
            assert time.monotonic() < deadline, f"{self.spool.queued} messages not stored within {timeout} s"
            self.courier.progress.wait(0.05)
            self.courier.progress.clear()

    def close(self) -> None:
        """Stop the courier after its last store (the outbox stays open)."""
        self.courier.stop(timeout=5.0)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
