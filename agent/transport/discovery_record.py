"""Which Home Assistant components the agent announced last, kept in the state directory.

Home Assistant keeps an entity whose component simply disappears from a device's discovery message;
it removes one only when the message names it with its platform alone (`{"p": "sensor"}`). The
agent does not remember its previous config, so it remembers what it announced: at start the
components recorded here and missing from the new message are sent once as removals, and the
record becomes the new message's components. The file is small JSON, written to a temporary file
and renamed over the old one, so a crash leaves the old record or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

log = logging.getLogger("yolo_edge.discovery")

FILE_NAME = "discovery_components.json"
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")  # what discovery.py makes component keys of
_PLATFORM_RE = re.compile(r"[a-z_]{1,40}")


def announced(body: Mapping[str, Any]) -> dict[str, str]:
    """A discovery message's components as key -> platform, removals (the platform alone) left out."""
    return {key: component["p"] for key, component in body["cmps"].items() if set(component) != {"p"}}


def with_removals(body: Mapping[str, Any], before: Mapping[str, str]) -> dict[str, Any]:
    """`body` plus, for each component announced `before` and absent from it, that component's platform alone:
    Home Assistant then removes its entity (and does nothing for one it never had)."""
    gone = {key: {"p": platform} for key, platform in before.items() if key not in body["cmps"]}
    return {**body, "cmps": {**body["cmps"], **gone}}


class DiscoveryRecord:
    """The components announced last, in `<state_dir>/discovery_components.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME

    def load(self) -> Mapping[str, str]:
        """key -> platform; empty when there is no record (a first run) or it cannot be read (said in one line)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            components = raw["components"]
            if not isinstance(components, dict) or not all(
                isinstance(k, str) and _KEY_RE.fullmatch(k) and isinstance(p, str) and _PLATFORM_RE.fullmatch(p)
                for k, p in components.items()
            ):
                raise ValueError("components is not an object of component keys and platforms")
        except FileNotFoundError:
            return MappingProxyType({})
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "%s unreadable (%s): Home Assistant entities of components removed since the last run stay; "
                "delete them in Home Assistant",
                self.path,
                error,
            )
            return MappingProxyType({})
        return MappingProxyType(dict(components))

    def save(self, components: Mapping[str, str]) -> None:
        """Record `components`; a full or read-only disk is one warning and the agent goes on."""
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "w", encoding="utf-8") as out:
                json.dump({"components": dict(components)}, out, separators=(",", ":"), sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):  # the disk that refused the write may refuse this too
                partial.unlink(missing_ok=True)
            log.warning(
                "Home Assistant components not recorded in %s (%s): ones removed before the next start stay there",
                self.path,
                error,
            )
