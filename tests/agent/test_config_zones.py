"""[zones.NAME] in the config file: what is accepted, and one line naming the key for what is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, ZoneConfig, load_config
from agent.config.zones import unknown_zone_labels
from tests.agent.agent_process import agent_env, run_agent

DRIVEWAY = """
[zones.driveway]
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
labels = ["car", "person"]
inertia = 2
loiter_s = 1.5

[zones.door]
polygon = [[0, 0], [0.2, 0], [0.1, 0.3]]
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(path, env={}, require_model=False)


def rejects(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_zones_are_read_in_order_with_their_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, DRIVEWAY)
    assert config.zones == (
        ZoneConfig("driveway", ((0.1, 0.5), (0.9, 0.5), (0.9, 1.0), (0.1, 1.0)), ("car", "person"), 2, 1.5),
        ZoneConfig("door", ((0.0, 0.0), (0.2, 0.0), (0.1, 0.3)), (), 3, 0.0),
    )
    assert config.redacted()["zones"]["door"] == {
        "polygon": [[0.0, 0.0], [0.2, 0.0], [0.1, 0.3]],
        "labels": [],
        "inertia": 3,
        "loiter_s": 0.0,
    }


def test_no_zones_is_no_zones(tmp_path: Path) -> None:
    assert load(tmp_path, "").zones == ()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("polygon = [[0.1, 0.1], [0.9, 0.1]]", "zones.z.polygon"),  # two points
        ("polygon = [[0.1, 0.1], [1.2, 0.1], [0.5, 0.9]]", "zones.z.polygon: point [1.2, 0.1] is outside 0..1"),
        ("polygon = [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]", "zones.z.polygon: the points enclose no area"),
        # a figure 8: edges 1 and 3 cross
        ("polygon = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]", "zones.z.polygon: edge 1 crosses edge 3"),
        ("polygon = [[0.1, 0.1], [0.9, 0.1], 'x']", "zones.z.polygon: point 'x' is not allowed"),
        ("polygon = [[0.1, 0.1], [0.9, 0.1], [true, 0.5]]", "zones.z.polygon: point [True, 0.5] is not allowed"),
        ("labels = ['car']", "zones.z.polygon is missing"),
        ("polygon = [[0, 0], [1, 0], [0, 1]]\ninertia = 0", "zones.z.inertia"),
        ("polygon = [[0, 0], [1, 0], [0, 1]]\nloiter_s = -1", "zones.z.loiter_s"),
        ("polygon = [[0, 0], [1, 0], [0, 1]]\nlabels = 'car'", "zones.z.labels"),
        ("polygon = [[0, 0], [1, 0], [0, 1]]\ncolour = 'red'", "unknown key zones.z.colour"),
    ],
)
def test_a_bad_zone_is_one_line_naming_the_key(tmp_path: Path, body: str, names: str) -> None:
    message = rejects(tmp_path, f"[zones.z]\n{body}\n")
    assert names in message and "\n" not in message, message


BIG = "1" * 400  # a TOML integer: no size limit there, but too big for a float


def test_numbers_too_big_for_a_float_are_one_line_from_check(tmp_path: Path) -> None:
    """`check` as a user runs it: exit 2 and one line naming each key, where OverflowError had a traceback."""
    zones = {
        "a": (f"polygon = [[0, 0], [1, 0], [0, 1]]\nloiter_s = {BIG}", "zones.a.loiter_s: 1111"),
        "b": (f"polygon = [[0, 0], [{BIG}, 0], [0, 1]]", "zones.b.polygon: point [1111"),
        "c": (f"polygon = [[0, 0], [1, 0], [0, -{BIG}]]", "zones.c.polygon: point [0, -1111"),
    }
    path = tmp_path / "agent.toml"
    path.write_text("".join(f"[zones.{name}]\n{body}\n" for name, (body, _) in zones.items()))
    result = run_agent(["check", "--config", str(path)], agent_env(tmp_path / "state"), tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("yolo-edge-agent: config error: zones.a.loiter_s"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for _, names in zones.values():
        assert names in result.stderr
    assert len(result.stderr) < 600, result.stderr  # the values are cut, not echoed in full


def test_a_zone_name_must_be_topic_safe(tmp_path: Path) -> None:
    message = rejects(tmp_path, '[zones."front door"]\npolygon = [[0, 0], [1, 0], [0, 1]]\n')
    assert "zones.front door" in message and "letters, digits, _ and -" in message


def test_zones_must_be_tables(tmp_path: Path) -> None:
    assert "must be a table" in rejects(tmp_path, "[zones]\nz = 3\n")


def test_zone_labels_are_checked_against_the_model() -> None:
    zones = (ZoneConfig("yard", ((0, 0), (1, 0), (0, 1)), ("person", "unicorn")),)
    problems = unknown_zone_labels(zones, ["person", "car"])
    assert problems == ["zones.yard.labels: 'unicorn' is not a label of the model (it knows car, person)"]
    assert unknown_zone_labels(zones[:0], ["person"]) == []


def test_motion_and_tracking_sections_have_their_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "[motion]\nthreshold = 40\n[tracking]\nmin_hits = 3\n")
    assert config.motion.threshold == 40 and config.motion.enabled and config.motion.refresh_s == 5.0
    assert config.tracking.min_hits == 3 and config.tracking.max_lost_s == 2.0
    assert "motion.threshold" in rejects(tmp_path, "[motion]\nthreshold = 300\n")
