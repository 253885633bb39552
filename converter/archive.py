"""A bundle as one `.tar.gz`, the file `<prefix>/<device>/deploy` points a device at.

The archive is reproducible: entries sorted, owners, modes and times fixed, no gzip time stamp.
The same bundle therefore always gives the same sha256, so deploying it twice is recognised as
the same deployment. It holds one top-level directory named after the bundle, with regular files
only (the agent refuses links and devices in an archive anyway).
"""

from __future__ import annotations

import gzip
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.bundle import MANIFEST_NAME, sha256_file
from converter.errors import ConvertError

ARCHIVE_SUFFIX = ".tar.gz"


@dataclass(frozen=True)
class BundleArchive:
    """A written archive: where it is, its sha256 (what a deploy command carries) and its size in bytes."""

    path: Path
    sha256: str
    bytes: int


def archive_path(bundle: Path) -> Path:
    """`bundles/shapes` -> `bundles/shapes.tar.gz`."""
    return bundle.with_name(bundle.name + ARCHIVE_SUFFIX)


def _entries(bundle: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) for every file and directory of the bundle, parents first."""
    entries = [(bundle, bundle.name)]
    for path in sorted(bundle.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ConvertError(f"{path} is not a regular file; a bundle archive holds regular files only")
        entries.append((path, f"{bundle.name}/{path.relative_to(bundle).as_posix()}"))
    return entries


def _tar_info(path: Path, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = path.stat().st_size, 0o644
    return info


def write_archive(bundle: Path, out: Path | None = None) -> BundleArchive:
    """Write `bundle` as a `.tar.gz` (default: beside it, `<bundle>.tar.gz`) atomically; return what was written.

    The archive is written to a temporary file in the same directory and renamed into place, so a
    web server never hands out half of it. Raises ConvertError naming the file on a user error.
    """
    bundle = Path(bundle)
    if not (bundle / MANIFEST_NAME).is_file():
        raise ConvertError(
            f"{bundle} is not a bundle (no {MANIFEST_NAME}); pass a directory written by yolo-edge-convert"
        )
    out = Path(out) if out is not None else archive_path(bundle)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.resolve().parent)
    try:
        with os.fdopen(descriptor, "wb") as raw:
            # mtime=0 and no file name in the gzip header: same bundle, same bytes.
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for path, name in _entries(bundle):
                    info = _tar_info(path, name)
                    if info.isdir():
                        tar.addfile(info)
                    else:
                        with open(path, "rb") as stream:
                            tar.addfile(info, stream)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a web server must be able to read it
        os.replace(temporary, out)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ConvertError(f"cannot write {out}: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return BundleArchive(out, sha256_file(out), out.stat().st_size)
