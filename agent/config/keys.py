"""How one configuration key is read and checked: its kind, the rule it must pass, the phrase saying what is allowed.

Each key of a section dataclass carries a Spec in its field metadata (`rule(...)`), so parsing and
validation are driven by the declarations and every problem names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


class BadEntry(ValueError):
    """One entry of a list is not allowed: the message quotes it rather than the whole list."""

    def __init__(self, entry: object) -> None:
        super().__init__(entry)
        self.entry = entry


class ConfigError(Exception):
    """A configuration problem the user can fix; the message is one line (several joined by '; ')."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


# Integers a key may hold: what SQLite and the C libraries below take (TOML integers have no size limit).
MAX_INT = 2**63 - 1
SHOWN_CHARS = 60  # a value quoted in a message is cut to this, so a 400-digit number keeps the line readable

TEXT_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def from_text(kind: str, text: str) -> object:
    """An environment or command-line string as the TOML value it stands for."""
    if kind in ("int", "float", "bool"):
        return {"int": int, "float": float, "bool": lambda s: TEXT_BOOLS[s.lower()]}[kind](text)
    if kind in ("labels", "hosts"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "thresholds":  # "person=0.5,car=0.3"
        pairs = [part.split("=") for part in text.split(",") if part.strip()]
        return {label.strip(): float(threshold) for label, threshold in pairs}
    return text


def convert(kind: str, value: object) -> Any:
    """A TOML-typed value as the key's Python type; TypeError or ValueError when it is of the wrong kind."""
    # bool is an int to Python, but `port = true` is a mistake, not port 1.
    if kind in ("bool", "int", "float", "uri") and isinstance(value, bool) != (kind == "bool"):
        raise TypeError
    if kind == "bool":
        return value
    if kind == "int" and isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError
        return value
    if kind == "float" and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # TOML integers have no size limit; floats do
            raise ValueError from None
        if math.isfinite(number):
            return number
    if kind in ("str", "choice") and isinstance(value, str):
        return value.strip().lower() if kind == "choice" else value  # LOG_LEVEL=DEBUG is what people type
    if kind == "uri" and isinstance(value, str | int):
        return str(value)  # `uri = 0` (the first camera) is natural TOML
    if kind == "path" and isinstance(value, str | os.PathLike) and str(value):
        try:
            return Path(value).expanduser()
        except RuntimeError:  # ~name of a user that does not exist
            raise ValueError from None
    if kind == "labels" and isinstance(value, list | tuple) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    if kind == "hosts" and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    if kind == "thresholds" and isinstance(value, Mapping) and all(isinstance(k, str) and k for k in value):
        return MappingProxyType({label: convert("float", threshold) for label, threshold in value.items()})
    raise TypeError


def finite_float(value: object) -> float | None:
    """A TOML number as a finite float; None for anything else (bool, text, nan, an integer too big for a float)."""
    try:
        return convert("float", value)
    except (TypeError, ValueError):
        return None


def shown_value(value: object) -> str:
    """`value`'s repr for a message, cut to SHOWN_CHARS."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


@dataclass(frozen=True)
class Spec:
    """How one key is read and what it allows; `expected` completes "... is not allowed; expected ..."."""

    kind: str  # str, choice, uri, int, float, bool, path, labels, thresholds, hosts
    expected: str
    check: Callable[[Any], bool]
    optional: bool  # None by default; an empty string from env or command line resets it

    def parse(self, raw: object, text: bool) -> Any:
        """`text`: raw came from the environment or command line, so a string is parsed, not taken as-is."""
        if text and isinstance(raw, str):
            # Stray spaces around a value come from EnvironmentFile= lines and shell quoting, never on purpose.
            if self.optional and not raw.strip():
                return None
            raw = from_text(self.kind, raw.strip())
        value = convert(self.kind, raw)
        if not self.check(value):
            raise ValueError
        return value


def anything(value: object) -> bool:
    return True


def rule(kind: str, expected: str, check: Callable[[Any], bool] = anything, optional: bool = False) -> dict:
    """Field metadata saying how a key is parsed and what it allows; optional keys default to None."""
    return {"spec": Spec(kind, expected, check, optional)}


def positive(value: float) -> bool:
    return value > 0


def fraction(value: float) -> bool:
    return 0 < value <= 1


def topic_prefix(value: str) -> bool:
    return bool(value) and not any(c in value for c in "#+\0") and not value.startswith("/") and not value.endswith("/")


BOOL = "true or false (1/0, yes/no in the environment)"
FILE = "an existing, readable file"
SECONDS = "a number > 0 (seconds)"
