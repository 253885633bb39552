"""The benchmark scripts' shared argument types."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.arguments import int_list


def test_int_list_gives_distinct_sorted_values() -> None:
    assert int_list(1, "thread counts")(" 2, 1,2,,") == (1, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,x", "thread counts: wants comma-separated integers, got '1,x'"),
        ("", "thread counts: every value must be at least 1, got ''"),
        ("0,2", "thread counts: every value must be at least 1, got '0,2'"),
    ],
)
def test_int_list_rejects_with_one_line_naming_the_values(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as rejected:
        int_list(1, "thread counts")(text)
    assert str(rejected.value) == message
