"""Which deployed bundle the agent runs, recorded in the state directory so it survives a restart.

`<state_dir>/active-bundle.json` is written (atomically) only once a deployed bundle has run on
real frames in the frame loop, so a model that crashes the process right after the switch is
not the one the next start picks. At start-up the agent prefers the recorded bundle to
`[model] path`; if it no longer verifies, it falls back to `[model] path` and says so.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from agent.bundle import BundleError
from agent.pipeline.inference import ModelLoadError

log = logging.getLogger("yolo_edge.deploy")

RECORD_NAME = "active-bundle.json"
BUNDLES_DIR = "bundles"
DEPLOYED_PREFIX = "deploy-"
DEPLOYED_RE = re.compile(rf"{DEPLOYED_PREFIX}[0-9a-f]{{16}}")

T = TypeVar("T")


@dataclass(frozen=True)
class ActiveBundle:
    """A deployed bundle: its directory, the sha256 of the archive it came from, that archive's URL (shown form)."""

    path: Path
    sha256: str
    url: str
    ts: float

    def as_dict(self, state_dir: Path) -> dict[str, object]:
        return {
            "path": self.path.relative_to(state_dir).as_posix(),
            "sha256": self.sha256,
            "url": self.url,
            "ts": self.ts,
        }


def deployed_dir(state_dir: Path, sha256: str) -> Path:
    """Where the bundle of the archive with this sha256 is unpacked: `<state_dir>/bundles/deploy-<16 hex>`."""
    return Path(state_dir) / BUNDLES_DIR / f"{DEPLOYED_PREFIX}{sha256[:16]}"


def read_active(state_dir: Path) -> ActiveBundle | None:
    """The recorded bundle, or None when there is none (an unreadable record is logged and ignored)."""
    path = Path(state_dir) / RECORD_NAME
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("ignoring %s: it cannot be read (%s); delete it to silence this", path, error)
        return None
    try:
        bundle = Path(state_dir) / BUNDLES_DIR / PurePosixPath(body["path"]).name
        record = ActiveBundle(bundle, str(body["sha256"]), str(body.get("url", "")), float(body.get("ts", 0.0)))
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring %s: it does not name a deployed bundle; delete it to silence this", path)
        return None
    # Only a directory this agent unpacked is trusted as a deployment: the record is a file anyone with
    # write access to the state directory could edit.
    if not DEPLOYED_RE.fullmatch(bundle.name):
        log.warning("ignoring %s: %s is not a deployed bundle directory", path, bundle)
        return None
    return record


def write_active(state_dir: Path, record: ActiveBundle) -> None:
    """Record `record` as the bundle to start with (temp file, fsync, rename: never half a record)."""
    path = Path(state_dir) / RECORD_NAME
    descriptor, temporary = tempfile.mkstemp(prefix=f".{RECORD_NAME}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(record.as_dict(Path(state_dir)), stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class StartupModel:
    """What the agent started with: `path`; `record`, the deployment recorded in the state directory (if
    deploy is enabled and there is one); `fallback_reason`, why that record is not what runs (None when it is)."""

    path: Path
    record: ActiveBundle | None = None
    fallback_reason: str | None = None

    @property
    def deployed(self) -> ActiveBundle | None:
        """The recorded deployment when it is what runs."""
        return self.record if self.fallback_reason is None else None


def load_startup_model(
    state_dir: Path, deploy_enabled: bool, config_path: Path, load: Callable[[Path], T]
) -> tuple[T, StartupModel]:
    """`load` the recorded deployed bundle, else `config_path` (`[model] path`); log which and why."""
    record = read_active(state_dir)
    record_file = Path(state_dir) / RECORD_NAME
    if record is not None and not deploy_enabled:
        log.info("[deploy] enabled = false: not using the deployed bundle %s recorded in %s", record.path, record_file)
        record = None
    reason: str | None = None
    if record is not None:
        try:
            loaded = load(record.path)
        except (BundleError, ModelLoadError) as error:
            reason = f"the deployed bundle {record.path} no longer verifies: {error}"
            log.warning("%s; falling back to [model] path %s", reason, config_path)
        else:
            log.info(
                "model: the deployed bundle %s (archive sha256 %s..., recorded in %s)",
                record.path,
                record.sha256[:16],
                record_file,
            )
            return loaded, StartupModel(record.path, record)
    loaded = load(config_path)
    log.info("model: [model] path %s", config_path)
    return loaded, StartupModel(config_path, record, reason)
