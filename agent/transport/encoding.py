"""The JSON encoding of every message: compact UTF-8, as the MQTT contract wants (docs/topics.md)."""

from __future__ import annotations

import json


def dumps(value: object) -> bytes:
    """value as compact UTF-8 JSON.

    A command's JSON may hold `"\\ud800"`, valid JSON text for a lone surrogate, which UTF-8 cannot
    hold: an answer quoting it shows U+FFFD there instead of failing to go out at all.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: a pair split in two code points is joined, a lone half becomes U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode("utf-8")
