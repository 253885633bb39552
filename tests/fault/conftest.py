from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_process import start_gated_broker
from tests.broker import Broker


@pytest.fixture
def gated_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker the observer enters with a password and the agent (anonymous) only when let in (set_anonymous)."""
    running = start_gated_broker(tmp_path)
    yield running
    running.stop()
