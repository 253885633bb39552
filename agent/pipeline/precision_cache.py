"""Remember what `--precision auto` measured, so only the first start on a board pays for timing.

Timing both models costs a second session and a few dozen inferences (seconds at 640 on a Pi),
and the answer only changes with the models, the thread count or the CPU. The key holds all
three; anything else (a new bundle, a different board, more threads) times again.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.system.board import cpu_model

log = logging.getLogger("yolo_edge.model")

CACHE_NAME = "precision-choice.json"
MAX_ENTRIES = 16  # a few bundles x thread counts; older entries go first


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    timings_ms: dict[str, float]


def choice_key(hashes: dict[str, str], threads: int) -> str:
    models = ",".join(f"{p}={h[:16]}" for p, h in sorted(hashes.items()))
    return f"{models};threads={threads};{platform.machine()};{cpu_model()}"


class PrecisionCache:
    """A small JSON file in the state directory; a missing or unreadable file is an empty cache."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / CACHE_NAME

    def _entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> PrecisionChoice | None:
        entry = self._entries().get(key)
        if not isinstance(entry, dict) or entry.get("precision") not in ("int8", "fp32"):
            return None
        timings = entry.get("timings_ms") if isinstance(entry.get("timings_ms"), dict) else {}
        return PrecisionChoice(entry["precision"], {str(k): float(v) for k, v in timings.items()})

    def put(self, key: str, choice: PrecisionChoice) -> None:
        """Best effort: a read-only or full disk only means timing again next start."""
        entries = self._entries()
        entries.pop(key, None)
        entries[key] = {"precision": choice.precision, "timings_ms": choice.timings_ms}
        kept = dict(list(entries.items())[-MAX_ENTRIES:])
        temporary: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(descriptor, "w") as handle:
                json.dump(kept, handle, indent=1)
            os.replace(temporary, self.path)
            temporary = None
        except OSError as error:
            log.warning("cannot remember the precision choice in %s: %s", self.path, error)
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
