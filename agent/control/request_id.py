"""The optional `request_id` of a `set` or `deploy` command, copied into every answer to it.

An operator's tool puts one in a command and waits for answers that carry it back, so two
operators sending commands to the same device never read each other's answers. It is not a
setting: it is taken out of the payload before the settings are checked.
"""

from __future__ import annotations

import json
from typing import Any

KEY = "request_id"
MAX_CHARS = 64


class BadRequestId(ValueError):
    """A `request_id` that is not a string of 1..64 printable characters; the message says what was sent."""


def take_request_id(body: dict[str, Any]) -> str | None:
    """Remove and return body's request_id (None when absent); BadRequestId when it is not a usable one."""
    if KEY not in body:
        return None
    value = body.pop(KEY)
    if isinstance(value, str) and 0 < len(value) <= MAX_CHARS and value.isprintable():
        return value
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise BadRequestId(f"{KEY}: {shown} is not allowed; expected a string of 1..{MAX_CHARS} printable characters")


def with_request_id(body: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """body with `request_id` set when there is one (answers to commands without one stay as they were)."""
    if request_id is not None:
        body[KEY] = request_id
    return body
