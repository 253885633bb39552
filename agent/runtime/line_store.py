"""Line counts kept in the state directory, so a restart (or a power cut) does not zero them.

One small JSON file, written to a temporary file and renamed over the old one on every crossing: a
crash leaves the previous counts or the new ones, never half a file. A file that cannot be read
(corrupt, from another version) is moved aside and counting starts again, said in one log line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from agent.scene.lines import DIRECTIONS, LineCounts

log = logging.getLogger("yolo_edge.agent")

FILE_NAME = "line_counts.json"


class LineStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._failing = False

    def load(self) -> LineCounts:
        """The counts saved last, or none since now."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return LineCounts(since=float(raw["since"]), counts=_counts(raw["lines"]))
        except FileNotFoundError:
            return LineCounts(since=time.time())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            aside = self.path.with_name(f"{FILE_NAME}.unreadable-{int(time.time())}")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            log.warning("line counts in %s unreadable (%s); counting from zero (old file: %s)", self.path, error, aside)
            return LineCounts(since=time.time())

    def save(self, counts: LineCounts) -> None:
        """Write the counts; a full or read-only disk is said once in the log and the agent counts on in memory."""
        body = json.dumps({"since": counts.since, "lines": counts.counts}, separators=(",", ":"))
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
        except OSError as error:
            if not self._failing:
                log.warning("line counts not saved to %s: %s; they are kept in memory", self.path, error)
            self._failing = True
            return
        if self._failing:
            log.info("line counts saved to %s again", self.path)
        self._failing = False


def _counts(raw: object) -> dict[str, dict[str, dict[str, int]]]:
    """The `lines` object of the file, checked: line -> direction -> label -> non-negative integer."""
    if not isinstance(raw, dict):
        raise TypeError("lines is not an object")
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for line, directions in raw.items():
        counts[str(line)] = {}
        for direction, labels in directions.items():
            if direction not in DIRECTIONS or not all(isinstance(n, int) and n >= 0 for n in labels.values()):
                raise ValueError(f"line {line!r}: {direction!r} holds something other than counts")
            counts[str(line)][direction] = {str(label): int(n) for label, n in labels.items()}
    return counts
