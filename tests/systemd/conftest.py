from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.broker import Broker
from tests.systemd.secured_broker import Client, start_secured


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The shipped Mosquitto config, ACL and a password file, one broker per test module."""
    broker = start_secured(tmp_path_factory.mktemp("acl"))
    yield broker
    broker.stop()


@pytest.fixture
def login(secured: Broker) -> Iterator[Callable[..., Client]]:
    """login(user) -> a connected Client; all closed after the test."""
    clients: list[Client] = []

    def connect(user: str, websockets: bool = False) -> Client:
        client = Client(secured, user, websockets=websockets)
        clients.append(client)
        reason = client.connect()
        assert not reason.is_failure, f"{user} was refused: {reason}"
        return client

    yield connect
    for client in clients:
        client.close()
