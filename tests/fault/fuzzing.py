"""What the property tests share: hypothesis settings, nasty values, JSON strategies, the one-line check.

Helpers for tests/fault/test_fuzz.py and tests/fault/test_fuzz_manifest.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

T = TypeVar("T")

FUZZ = settings(
    max_examples=300,
    deadline=None,  # the machine is shared: a slow example is not a failure
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# How hard `reaches` looks for an example: far fewer than a property test draws, since an outcome
# the strategy cannot produce in this many tries is one the property test hardly ever checks.
# Derandomized: whether a strategy reaches an outcome is a property of the strategy, and a reach test
# that passes or fails by the luck of the draw is one CI would refuse at random.
REACH = settings(FUZZ, max_examples=1000, derandomize=True, database=None)

# Values that once reached code paths the validators did not expect, and their neighbours.
NASTY_TEXT = [
    "",
    " ",
    "\n",
    "a\nb",
    "x\ry",
    "\t",
    "~",
    "~nosuchuser-yolo",
    "~nosuchuser-yolo/model.onnx",
    "/",
    ".",
    "-1",
    "0",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "9" * 400,
    "0x10",
    "1_000",
    "true",
    "YES",
    "DEBUG",
    "a=b,c",
    "person=0.5,car",
    "=",
    ",",
    "/dev/video0",
    "rtsp://user:pw@cam/stream",
    "é" * 3,
    "\u2028",
]
HUGE_INTS = [10**400, -(10**400), 2**63, -(2**63) - 1, 2**64]

text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=30))
integers = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE_INTS), st.integers(-5, 70000))
floats = st.floats(allow_nan=True, allow_infinity=True)
json_values = st.recursive(
    st.none() | st.booleans() | integers | floats | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=10,
)


def json_bytes(value: object) -> bytes:
    # allow_nan: Python's json writes NaN and Infinity, and json.loads reads them back.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def one_line(message: str) -> None:
    """What every rejection must be: a non-empty message that a log or journal shows as a single line."""
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"


def reaches(strategy: st.SearchStrategy[T], outcome: Callable[[T], str], wanted: str) -> T:
    """An example of `strategy` whose `outcome` is `wanted`, drawn as the property tests draw; fail if none.

    A property test whose strategy never produces an accepted input checks only the rejections
    (and the other way round): this is the check that both are reached.
    """
    try:
        return find(strategy, lambda value: outcome(value) == wanted, settings=REACH)
    except NoSuchExample:
        pytest.fail(f"{REACH.max_examples} examples of the strategy and not one is {wanted!r}")
