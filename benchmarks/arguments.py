"""Command-line value types the benchmark scripts share."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_list(minimum: int, what: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type for "a,b,c": the distinct integers, sorted, each at least `minimum`.

    what: how the message names the values, for example "thread counts".
    """

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: wants comma-separated integers, got {text!r}") from None
        if not values or values[0] < minimum:
            raise argparse.ArgumentTypeError(f"{what}: every value must be at least {minimum}, got {text!r}")
        return values

    return parse
