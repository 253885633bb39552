"""What the frame loop publishes through: a small interface, not paho.

MQTT (agent/transport/mqtt.py) is one implementation; the JSON-lines stdout publisher
used by `--dry-run` is another. Topics here are relative to `<prefix>/<device>/`
(for example "detections"); the publisher owns the prefix.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from agent.transport import topics

# Numbered messages (events, objects) held in memory at most while the outbox cannot store them, on
# either side of the publisher (the frame loop's queue, the MQTT publisher's spool); past it the oldest
# go, counted in stats.
HELD_IN_MEMORY_MAX = 1000


class StoreError(Exception):
    """publish_sequenced() could not store the message durably (a full, read-only or failing disk). It took
    no number: the caller keeps the message and hands it over again, in order, with the next one."""


@dataclass(frozen=True)
class PublisherHealth:
    """Transport figures reported in stats: messages waiting in the outbox, reconnects so far."""

    connected: bool
    outbox_pending: int = 0
    outbox_dropped: int = 0
    reconnects: int = 0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplyTo:
    """Where an MQTT 5 command asked for its answer: the response topic (absolute, a full topic
    name) and the correlation data to send back with it, as the requester set them."""

    topic: str
    correlation: bytes | None = None


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue one message. Never blocks the frame loop on the network (nor, for MQTT, on the disk).

        QoS 1 messages are durable: they are not lost if the broker is away.
        """

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        """Publish `build(seq)` where seq is the next number of a counter that never repeats; return seq.

        The number and the message are stored together before the message is sent, so a
        crash can neither make a number reach the broker twice nor leave a gap there (a
        number whose message was not yet stored never went out, and is given out again). Raises
        StoreError while it cannot store messages.
        """

    def publish_reply(self, reply_to: ReplyTo, payload: bytes) -> None:
        """Send an answer to an MQTT 5 command's response topic with its correlation data (QoS 0)."""

    def health(self) -> PublisherHealth: ...

    def close(self, timeout: float = 3.0) -> None:
        """Announce a clean stop, flush what the broker allows within `timeout` seconds, disconnect."""


class StdoutPublisher:
    """`--dry-run`: every message as one JSON line on stdout, same payloads as MQTT."""

    def __init__(self, topic_prefix: str, stream: TextIO | None = None) -> None:
        self.topic_prefix = topic_prefix
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._seqs: dict[str, int] = {}
        self._write(topics.STATUS, topics.ONLINE, 1, True)

    def _write(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        try:
            body: object = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            try:
                body = payload.decode("utf-8")
            except UnicodeDecodeError:  # a snapshot's JPEG: its size says enough on a terminal
                body = f"<{len(payload)} bytes of binary>"
        line = json.dumps(
            {"topic": f"{self.topic_prefix}/{topic}", "qos": qos, "retain": retain, "payload": body},
            separators=(",", ":"),
        )
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self._write(topic, payload, qos, retain)

    def publish_reply(self, reply_to: ReplyTo, payload: bytes) -> None:
        pass  # a dry run subscribes to nothing, so no command can ask for an answer

    def publish_sequenced(self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False) -> int:
        # A dry run has no outbox: numbers start at 1 each run, one counter per topic as over MQTT.
        with self._lock:
            seq = self._seqs[topic] = self._seqs.get(topic, 0) + 1
        self._write(topic, build(seq), qos, retain)
        return seq

    def health(self) -> PublisherHealth:
        return PublisherHealth(connected=True)

    def close(self, timeout: float = 3.0) -> None:
        self._write(topics.STATUS, topics.STOPPED, 1, True)
