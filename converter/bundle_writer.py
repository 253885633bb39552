"""Write a bundle atomically: everything goes to a sibling temp directory first.

A crash or Ctrl-C leaves either the old bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.bundle import MANIFEST_NAME
from converter.errors import ConvertError


def check_destination(out: Path, force: bool) -> None:
    """Refuse early, before minutes of work, when the bundle cannot be written."""
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a directory; choose another --out")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ConvertError(f"cannot write {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConvertError(f"cannot write {out}: directory {parent} is not writable")


@contextmanager
def staging_directory(out: Path) -> Iterator[Path]:
    """A temp directory beside `out` (same filesystem, so the final rename is atomic), removed on failure."""
    parent = out.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    path = staging / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def publish_bundle(staging: Path, out: Path) -> None:
    """Move the finished staging directory to `out`, replacing an old bundle only at the last moment."""
    out = out.resolve()
    for entry in staging.iterdir():
        with open(entry, "rb") as stream:
            os.fsync(stream.fileno())
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.old")
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(out, previous)
    os.replace(staging, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
