"""The page draws boxes and zones in the agent's colours (fleet/dashboard/js/layers.js against
agent/pipeline/snapshot.py), so a class looks the same in Home Assistant's snapshot and on the page.

The page is JavaScript and cannot import snapshot.py, so its constants are read from the source. The
tag's text is compared in the browser (tests/fleet/test_dashboard.py) and in tests/agent/pipeline/test_snapshot.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.pipeline.snapshot import PALETTE, ZONE_COLOR

LAYERS = Path(__file__).resolve().parents[2] / "fleet" / "dashboard" / "js" / "layers.js"


def rgb_hex(bgr: tuple[int, int, int]) -> str:
    blue, green, red = bgr
    return f"#{red:02x}{green:02x}{blue:02x}"


def test_the_page_colours_a_class_and_a_zone_as_the_agents_snapshots_do() -> None:
    text = LAYERS.read_text()
    palette = re.search(r"export const PALETTE = \[([^\]]*)\];", text)
    zone = re.search(r'export const ZONE_COLOUR = "(#[0-9a-f]{6})";', text)
    assert palette and zone, f"{LAYERS.name} no longer declares PALETTE and ZONE_COLOUR: update this test with it"
    assert re.findall(r'"(#[0-9a-f]{6})"', palette.group(1)) == [rgb_hex(c) for c in PALETTE]
    assert zone.group(1) == rgb_hex(ZONE_COLOR)
