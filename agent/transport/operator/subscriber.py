"""A subscriber that stays: the operator's long-running tools (the Prometheus exporter) read through it.

MqttSession (session.py) is built for a command that runs for seconds and must fail fast; an
exporter runs for months and must ride out broker restarts. This one fails fast only on the first
connection (a wrong host, password or ACL is one line at start), then lets paho reconnect for ever
and subscribes again on every connect (a session that expires on disconnect forgets its subscriptions), so the
broker re-sends its retained messages and the tool's picture is whole again after an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from agent.transport.client import ConnectionHooks, MqttConnection
from agent.transport.connection import MqttSettings
from agent.transport.operator.session import Received

__all__ = ["Subscriber"]


class Subscriber:
    """connect() (or `with`), then every message on `topics` goes to `on_message` from paho's thread.

    on_connection: called with True on every connect and False on every loss (for a `connected` gauge).
    timeout: seconds the first connect and its SUBACK may take.
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: list[str],
        on_message: Callable[[Received], None],
        on_connection: Callable[[bool], None] = lambda connected: None,
        timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.timeout = timeout
        hooks = ConnectionHooks(
            connected=lambda: on_connection(True),
            disconnected=lambda _was_connected: on_connection(False),
            message=lambda message: on_message(Received.of(message)),  # what it raises is logged
        )
        self._link = MqttConnection(settings, hooks, timeout)

    @property
    def where(self) -> str:
        """host:port of the broker node connected to (of the latest attempt before)."""
        return self._link.where

    def connect(self) -> Subscriber:
        """Connect and subscribe; ConnectionError with one line if the broker is unreachable or refuses either."""
        deadline = time.monotonic() + self.timeout
        self._link.open()
        try:
            self._link.subscribe_and_wait(self.topics, until=deadline)  # and on every reconnect
        except ConnectionError:
            self.close()
            raise
        return self

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> Subscriber:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
