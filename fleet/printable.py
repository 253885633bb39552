"""Text a device sent, made safe to print on an operator's terminal or in a log line.

Anything on the broker can publish a retained `stats` or `deploy/state`, or a topic of its own: an
ESC sequence in a model name rewrote and hid other devices' rows of `yolo-edge-fleet list`. So every
control character (C0, DEL, C1), the bidirectional overrides and isolates (they reorder what follows
them on screen), the line and paragraph separators, and lone surrogates (a terminal's encoder raises
on them) are shown escaped, as Python writes them: `\\x1b`, `\\u202e`. Everything else is left as sent.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks, embeddings, overrides, isolates
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff]"  # lone surrogates (valid in JSON text, not encodable)
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every character that could move the cursor, reorder or break a line shown escaped."""
    return _UNSAFE.sub(_escaped, text)
