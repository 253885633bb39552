"""Where an MQTT 5 command's answer may go as well: its own answer topic, or the device's reply subtree.

An MQTT 5 command names a response topic and the agent publishes the answer there, with the
agent's broker rights, not the requester's. Honouring any topic would make the agent a confused
deputy: a dashboard user the ACL lets write only `set` could have it write the device's `events`
or `status`, or Home Assistant's discovery. So a response topic is honoured only when it is the
command's own answer topic (`<prefix>/<device>/set/result`, `.../deploy/state`) or lies under
`<prefix>/<device>/reply/`, where the shipped ACL lets the device write and operators read. Any
other is refused in one log line; the answer still goes to the command's own topic, so the
command is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.transport.publisher import ReplyTo
from agent.transport.topics import REPLY

log = logging.getLogger("yolo_edge.commands")

_SHOWN_CHARS = 100  # a response topic may be 65 535 bytes long: the log line shows its start


@dataclass(frozen=True)
class ResponseTopics:
    """topic_prefix: `<prefix>/<device>`. send: publishes an answer to a response topic with its correlation data."""

    topic_prefix: str
    send: Callable[[ReplyTo, bytes], None]

    def checked(self, reply_to: ReplyTo | None, command: str, answer_topic: str) -> ReplyTo | None:
        """reply_to if its topic is `<topic_prefix>/<answer_topic>` or below `<topic_prefix>/reply/`; else None,
        said in one log line naming the refused topic. command: `set` or `deploy`, for that line."""
        if reply_to is None:
            return None
        own, subtree = f"{self.topic_prefix}/{answer_topic}", f"{self.topic_prefix}/{REPLY}/"
        topic = reply_to.topic
        if topic == own or (topic.startswith(subtree) and len(topic) > len(subtree)):
            return reply_to
        log.warning(
            "%s: response topic %.*r refused: the agent answers only on %s or under %s; answered on %s only",
            command,
            _SHOWN_CHARS,
            topic,
            own,
            subtree,
            own,
        )
        return None
