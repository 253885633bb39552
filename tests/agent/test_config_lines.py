"""`[lines.NAME]` and `[lines] reset` in the config file: read in order with defaults, each mistake one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.config.lines import LineConfig, LinesConfig, unknown_line_labels

GATE = """
[lines]
reset = "never"

[lines.gate]
points = [[0.2, 0.6], [0.8, 0.6]]
labels = ["car"]
anchor = "center"

[lines.door]
points = [[0.5, 0.1], [0.5, 0.9]]
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(path, env={}, require_model=False)


def test_lines_are_read_in_order_with_their_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, GATE)
    assert config.lines == LinesConfig(
        (
            LineConfig("gate", ((0.2, 0.6), (0.8, 0.6)), ("car",), "center"),
            LineConfig("door", ((0.5, 0.1), (0.5, 0.9)), (), "bottom_center"),
        ),
        "never",
    )
    assert config.redacted()["lines"]["door"] == {
        "points": [[0.5, 0.1], [0.5, 0.9]],
        "labels": [],
        "anchor": "bottom_center",
    }


def test_no_lines_is_no_lines_and_a_daily_reset(tmp_path: Path) -> None:
    assert load(tmp_path, "").lines == LinesConfig((), "daily")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[lines.g]\npoints = [[0.1, 0.1]]", "lines.g.points"),
        ("[lines.g]\npoints = [[0.1, 0.1], [0.1, 0.1]]", "lines.g.points: the two points are (nearly) the same"),
        ("[lines.g]\npoints = [[0.1, 0.1], [1.5, 0.1]]", "lines.g.points: point [1.5, 0.1] is not allowed"),
        (f"[lines.g]\npoints = [[0.1, 0.1], [{'9' * 400}, 0.1]]", "lines.g.points: point"),
        ("[lines.g]\nlabels = []", "lines.g.points is missing"),
        ("[lines.g]\npoints = [[0, 0], [1, 1]]\nanchor = 'feet'", "lines.g.anchor: 'feet' is not allowed"),
        ("[lines.g]\npoints = [[0, 0], [1, 1]]\nlabels = 'car'", "lines.g.labels"),
        ("[lines.g]\npoints = [[0, 0], [1, 1]]\ncolour = 'red'", "unknown key lines.g.colour"),
        ("[lines]\nreset = 'weekly'", "'weekly' is not allowed; expected one of daily, never"),
        ("[lines]\ng = 3", "lines.g in"),
        ('[lines."a b"]\npoints = [[0, 0], [1, 1]]', "lines.a b: a line name may hold letters, digits"),
        ("lines = 3", "lines in"),
    ],
)
def test_a_bad_line_is_one_line_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text + "\n")
    message = str(caught.value)
    assert names in message and "\n" not in message and "Traceback" not in message, message


def test_line_labels_are_checked_against_the_model() -> None:
    lines = (LineConfig("gate", ((0, 0), (1, 1)), ("car", "unicorn")),)
    (problem,) = unknown_line_labels(lines, ["car", "person"])
    assert problem.startswith("lines.gate.labels: 'unicorn' is not a label of the model")
