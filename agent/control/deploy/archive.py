"""Unpack a downloaded bundle archive (`.tar.gz`) without trusting it.

Only directories and regular files are written, each by name under a fresh staging directory:
absolute names, `..`, links (symbolic and hard), devices, FIFOs and sparse files are refused
before anything is written for them, and files are created with O_EXCL | O_NOFOLLOW so nothing
can be written through a link or over another member. The total size and the number of members
are capped (a small archive can unpack to gigabytes). Only a complete, checked bundle is renamed
to its final name, so a failure leaves nothing half-unpacked under it.

The archive holds the bundle at its top (manifest.json beside the models) or in one top-level
directory, which is what `yolo-edge-convert --archive` and `tar -czf b.tar.gz shapes/` write.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from agent.bundle import MANIFEST_NAME

CHUNK_BYTES = 1 << 20
STAGING_PREFIX = ".partial-"  # left behind only by a crash; removed at the next start


class ArchiveError(Exception):
    """The archive is unsafe or unreadable; the message is one line naming the member and the rule."""


@dataclass(frozen=True)
class UnpackLimits:
    """max_bytes: total size of the files unpacked. max_members: entries in the archive."""

    max_bytes: int
    max_members: int = 64


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return f"an entry of type {member.type!r}"


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path of a member as parts below the bundle; raises ArchiveError when it could leave it."""
    if "\0" in name or "\\" in name:
        raise ArchiveError(f"member {name!r}: NUL and backslash are not allowed in names")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveError(f"member {name!r} has an absolute path; refusing an archive that writes outside its folder")
    parts = tuple(part for part in path.parts if part != ".")
    if ".." in parts:
        raise ArchiveError(f"member {name!r} contains '..'; refusing an archive that writes outside its folder")
    return parts


def _copy(source: IO[bytes], target: int, size: int, name: str) -> None:
    remaining = size
    while remaining > 0:
        chunk = source.read(min(CHUNK_BYTES, remaining))
        if not chunk:
            raise ArchiveError(f"member {name!r} is cut short; the archive is corrupt")
        os.write(target, chunk)  # a short write to a regular file only happens when the disk is full
        remaining -= len(chunk)


def _mkdir(path: Path, name: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArchiveError(f"member {name!r} needs a folder where the archive already put a file") from None


def _extract(tar: tarfile.TarFile, staging: Path, limits: UnpackLimits) -> None:
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise ArchiveError(f"the archive has more than {limits.max_members} entries; a bundle has a handful")
        parts = _safe_parts(member.name)
        if member.isdir():
            if parts:
                _mkdir(staging.joinpath(*parts), member.name)
            continue
        if not member.isreg() or member.issparse():
            raise ArchiveError(f"member {member.name!r} is {_kind(member)}; a bundle archive holds regular files only")
        if not parts:
            raise ArchiveError(f"member {member.name!r} has no file name")
        total += member.size
        if total > limits.max_bytes:
            raise ArchiveError(f"the archive unpacks to more than {limits.max_bytes} bytes; refusing it")
        target = staging.joinpath(*parts)
        _mkdir(target.parent, member.name)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has data
        try:
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, IsADirectoryError):
            raise ArchiveError(f"member {member.name!r} appears twice in the archive") from None
        try:
            _copy(source, descriptor, member.size, member.name)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _bundle_root(staging: Path) -> Path:
    if (staging / MANIFEST_NAME).is_file():
        return staging
    entries = list(staging.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise ArchiveError(
        f"the archive holds no {MANIFEST_NAME} at its top or in one top-level folder; "
        "make it with yolo-edge-convert --archive"
    )


def unpack_bundle(archive: Path, dest: Path, limits: UnpackLimits) -> Path:
    """Unpack the bundle in `archive` to the directory `dest` (which must not exist); return `dest`.

    Raises ArchiveError for an unsafe, corrupt or non-bundle archive, OSError when the disk fails.
    """
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{dest.name}.", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                _extract(tar, staging, limits)
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise ArchiveError(f"the archive is not a readable .tar.gz ({error or type(error).__name__})") from None
        except OSError as error:
            if isinstance(error, FileNotFoundError | PermissionError) or error.errno is not None:
                raise  # our disk, not the archive
            raise ArchiveError(f"the archive is not a readable .tar.gz ({error})") from None  # gzip.BadGzipFile
        os.rename(_bundle_root(staging), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
