"""The dashboard's topics (fleet/dashboard/js/app.js) against agent/transport/topics.py and the shipped ACL.

The page is JavaScript and cannot import topics.py, so its lists are read from the source: every topic
it subscribes to is one the agent publishes and one it handles, and every command it sends is one the
agent takes and the ACL lets the `dashboard` user write.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.transport import topics
from agent.transport.topics import PUBLISHED, SUBSCRIBED, device_topic
from tests.systemd.secured_broker import PREFIX, granted

APP = Path(__file__).resolve().parents[2] / "fleet" / "dashboard" / "js" / "app.js"
STRING = re.compile(r'"([^"]*)"')
# What the page shows: the fleet table (status, stats) and the open device's views.
SHOWN = {topics.STATUS, topics.STATS, topics.DETECTIONS, topics.SNAPSHOT, topics.OBJECTS, topics.EVENTS}
SHOWN |= {topics.SNAPSHOT_CLEAN, topics.ZONES, topics.LINES, topics.SETTINGS, topics.SET_RESULT}


def found(pattern: str, text: str) -> list[str]:
    matches = re.findall(pattern, text)
    assert matches, f"{APP.name} no longer matches {pattern!r}: update this test with the page"
    return matches


def page_topics() -> tuple[list[str], list[str], set[str], set[str]]:
    """(DEVICE_TOPICS, the fleet-wide subscriptions, the topics its message handler tells apart, what it publishes)."""
    text = APP.read_text()
    device = STRING.findall(found(r"const DEVICE_TOPICS = \[([^\]]*)\];", text)[0])
    fleet = found(r"`\$\{prefix\}/\+/([\w/]+)`", text)
    handled = set(found(r'kind === "([\w/]+)"', text))
    sent = set(found(r"broker\.publish\(`\$\{prefix\}/\$\{open\}/([\w/]+)`", text))
    return device, fleet, handled, sent


def test_the_dashboard_subscribes_to_topics_the_agent_publishes_and_handles_each() -> None:
    device, fleet, handled, _ = page_topics()
    assert len(device) == len(set(device)), device
    unknown = sorted(set(device + fleet) - set(PUBLISHED))
    assert not unknown, f"{APP.name} subscribes to {unknown}, which agent/transport/topics.py does not publish"
    assert handled == set(device + fleet), "every topic the page subscribes to is handled, and only those"
    assert set(device + fleet) >= SHOWN, f"the page lost {sorted(SHOWN - set(device + fleet))}"


def test_the_dashboard_sends_only_commands_the_agent_takes_and_the_acl_allows() -> None:
    _, _, _, sent = page_topics()
    assert sent <= set(SUBSCRIBED), sorted(sent - set(SUBSCRIBED))
    assert {device_topic(PREFIX, "+", name) for name in sent} <= granted("user dashboard", "write")
