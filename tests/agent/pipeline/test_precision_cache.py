"""`--precision auto` times both models once per board, then reuses what it measured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.pipeline.detector import load_detector
from agent.pipeline.precision_cache import CACHE_NAME, PrecisionCache, PrecisionChoice, choice_key


def test_round_trip_and_key_depends_on_models_and_threads(tmp_path: Path) -> None:
    cache = PrecisionCache(tmp_path)
    key = choice_key({"int8": "a" * 64, "fp32": "b" * 64}, threads=4)
    assert cache.get(key) is None
    cache.put(key, PrecisionChoice("int8", {"int8": 10.0, "fp32": 15.5}))
    assert PrecisionCache(tmp_path).get(key) == PrecisionChoice("int8", {"int8": 10.0, "fp32": 15.5})
    assert choice_key({"int8": "a" * 64, "fp32": "b" * 64}, threads=2) != key
    assert choice_key({"int8": "c" * 64, "fp32": "b" * 64}, threads=4) != key
    assert [p.name for p in tmp_path.iterdir()] == [CACHE_NAME]  # no temporary file left behind


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"k": {"precision": "fp16"}})])
def test_a_damaged_cache_is_an_empty_one(tmp_path: Path, content: str) -> None:
    (tmp_path / CACHE_NAME).write_text(content)
    assert PrecisionCache(tmp_path).get("k") is None
    PrecisionCache(tmp_path).put("k", PrecisionChoice("fp32", {}))
    assert PrecisionCache(tmp_path).get("k") == PrecisionChoice("fp32", {})


def test_an_unwritable_state_dir_only_costs_a_warning(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = PrecisionCache(blocker / "state")  # a directory below a file can never be created
    with caplog.at_level(logging.WARNING):
        cache.put("k", PrecisionChoice("int8", {}))
    assert "cannot remember the precision choice" in caplog.text
    assert cache.get("k") is None


@pytest.mark.slow
def test_auto_times_once_then_reuses_the_choice(fixture_bundle: Path, tmp_path: Path, caplog) -> None:
    cache = PrecisionCache(tmp_path)
    first, first_report = load_detector(fixture_bundle, "auto", threads=2, precision_cache=cache)
    assert set(first_report.timings_ms) == {"int8", "fp32"}
    with caplog.at_level(logging.INFO, logger="yolo_edge.model"):
        second, second_report = load_detector(fixture_bundle, "auto", threads=2, precision_cache=cache)
    assert second.identity == first.identity
    assert second_report.timings_ms == first_report.timings_ms
    assert "measured earlier on this board" in caplog.text
    # Another thread count is another measurement.
    _third, third_report = load_detector(fixture_bundle, "auto", threads=1, precision_cache=cache)
    assert set(third_report.timings_ms) == {"int8", "fp32"}
    assert len(json.loads((tmp_path / CACHE_NAME).read_text())) == 2
