"""Unpack a downloaded bundle archive (`.tar.gz`) without trusting it.

Only directories and regular files are written, each by name under a fresh staging directory:
absolute names, `..`, links (symbolic and hard), devices, FIFOs and sparse files are refused
before anything is written for them, and files are created with O_EXCL | O_NOFOLLOW so nothing
can be written through a link or over another member. The total size and the number of members
are capped (a small archive can unpack to gigabytes), and so is every header before tarfile reads
what it announces: tarfile reads a pax header, a GNU long name and a GNU sparse map whole into
memory (a 0.4 MB archive can announce a 400 MB header), and Python before 3.11.10 parses a pax
header in time quadratic in its length, holding the GIL. Every write is checked to the last byte:
a full disk is reported as such, never left as a truncated model found "corrupt" later. Only a
complete, checked bundle is renamed to its final name, so a failure leaves nothing half-unpacked
under it.

The archive holds the bundle at its top (manifest.json beside the models) or in one top-level
directory, which is what `yolo-edge-convert --archive` and `tar -czf b.tar.gz shapes/` write.
"""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from agent.bundle import MANIFEST_NAME

CHUNK_BYTES = 1 << 20
STAGING_PREFIX = ".partial-"  # left behind only by a crash; removed at the next start
EXTENDED_HEADER_BYTES = 16 << 10  # pax headers and GNU long names of one archive together; a bundle's are tiny
MAX_NAME_CHARS = 4096  # PATH_MAX: a longer name cannot be written anyway
NAME_MAX_BYTES = 255  # NAME_MAX, for each part of a name
SHOWN_NAME_CHARS = 200  # how much of a name an error message quotes
_EXTENDED_TYPES = {
    tarfile.XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header",
    tarfile.SOLARIS_XHDTYPE: "Solaris extended header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
}
# ENOSPC and EDQUOT: no room; EFBIG: a file size limit (ulimit -f, systemd's LimitFSIZE=) said the same.
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class ArchiveError(Exception):
    """The archive is unsafe or unreadable; the message is one line naming the member and the rule."""


class DiskFullError(OSError):
    """No room under the bundles' directory; the message is one line naming it and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class UnpackLimits:
    """max_bytes: total size of the files unpacked. max_members: entries in the archive."""

    max_bytes: int
    max_members: int = 64


def _shown(name: str) -> str:
    """`name` quoted for a message, cut short: a pax header can make a name 16 KB long."""
    if len(name) <= SHOWN_NAME_CHARS:
        return repr(name)
    return f"{name[:SHOWN_NAME_CHARS]!r}... ({len(name)} characters)"


class _HeaderBudget:
    """What the archive's headers have taken so far: tarfile asks it about each header as soon as it is parsed."""

    def __init__(self, limits: UnpackLimits) -> None:
        self.limits = limits
        self.headers = 0
        self.extended_bytes = 0

    def check(self, header: tarfile.TarInfo) -> None:
        # Extended headers count as entries too: each one makes tarfile recurse and hold its text.
        self.headers += 1
        if self.headers > self.limits.max_members:
            raise ArchiveError(f"the archive has more than {self.limits.max_members} entries; a bundle has a handful")
        if header.size < 0:
            raise ArchiveError(f"member {_shown(header.name)} has a negative size; the archive is corrupt")
        if header.type == tarfile.GNUTYPE_SPARSE:  # its map goes on for as many blocks as it likes
            raise ArchiveError(
                f"member {_shown(header.name)} is a sparse file; a bundle archive holds regular files only"
            )
        kind = _EXTENDED_TYPES.get(header.type)
        if kind is None:
            return
        self.extended_bytes += header.size
        if self.extended_bytes > EXTENDED_HEADER_BYTES:
            raise ArchiveError(
                f"the archive's {kind} {_shown(header.name)} is {header.size} bytes, over the {EXTENDED_HEADER_BYTES} "
                "its extended headers may take together; refusing it (make it with yolo-edge-convert --archive)"
            )


def _checked_tar_info(budget: _HeaderBudget) -> type[tarfile.TarInfo]:
    """tarfile's own header parsing, with `budget` asked before tarfile reads what a header announces."""

    class CheckedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            header = super().frombuf(buf, encoding, errors)
            budget.check(header)
            return header

        def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str], tarfile: Any) -> None:
            # tarfile would read the sparse map out of the member's data, as many numbers as it claims.
            name = pax_headers.get("GNU.sparse.name", next.name)
            raise ArchiveError(f"member {_shown(name)} is a sparse file; a bundle archive holds regular files only")

    return CheckedTarInfo


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {_shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {_shown(member.linkname)})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return f"an entry of type {member.type!r}"


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path of a member as parts below the bundle; raises ArchiveError when it could leave it."""
    if len(name) > MAX_NAME_CHARS:
        raise ArchiveError(f"member {_shown(name)} has a name over {MAX_NAME_CHARS} characters")
    if "\0" in name or "\\" in name:
        raise ArchiveError(f"member {_shown(name)}: NUL and backslash are not allowed in names")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveError(
            f"member {_shown(name)} has an absolute path; refusing an archive that writes outside its folder"
        )
    parts = tuple(part for part in path.parts if part != ".")
    if any(len(part.encode(errors="surrogateescape")) > NAME_MAX_BYTES for part in parts):
        raise ArchiveError(f"member {_shown(name)} has a name part over {NAME_MAX_BYTES} bytes")
    if ".." in parts:
        raise ArchiveError(f"member {_shown(name)} contains '..'; refusing an archive that writes outside its folder")
    return parts


def _write_all(target: int, chunk: bytes) -> None:
    """os.write until every byte is stored: a regular file takes fewer only when the disk is (nearly) full."""
    view = memoryview(chunk)
    while view:
        written = os.write(target, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _copy(source: IO[bytes], target: int, size: int, name: str) -> None:
    remaining = size
    while remaining > 0:
        chunk = source.read(min(CHUNK_BYTES, remaining))
        if not chunk:
            raise ArchiveError(f"member {_shown(name)} is cut short; the archive is corrupt")
        _write_all(target, chunk)
        remaining -= len(chunk)


def _mkdir(path: Path, name: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArchiveError(f"member {_shown(name)} needs a folder where the archive already put a file") from None


def _extract(tar: tarfile.TarFile, staging: Path, limits: UnpackLimits) -> None:
    total = 0
    for member in tar:  # the entry count is the header budget's
        # Every member's size counts, whatever its type: a pax header may give a folder any size.
        total += member.size
        if total > limits.max_bytes:
            raise ArchiveError(f"the archive unpacks to more than {limits.max_bytes} bytes; refusing it")
        parts = _safe_parts(member.name)
        if member.isdir():
            if parts:
                _mkdir(staging.joinpath(*parts), member.name)
            continue
        if not member.isreg() or member.issparse():
            raise ArchiveError(
                f"member {_shown(member.name)} is {_kind(member)}; a bundle archive holds regular files only"
            )
        if not parts:
            raise ArchiveError(f"member {_shown(member.name)} has no file name")
        target = staging.joinpath(*parts)
        _mkdir(target.parent, member.name)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has data
        try:
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, IsADirectoryError):
            raise ArchiveError(f"member {_shown(member.name)} appears twice in the archive") from None
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

    Raises ArchiveError for an unsafe, corrupt or non-bundle archive, DiskFullError when there is no
    room for it under dest's parent, OSError when the disk fails otherwise.
    """
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{dest.name}.", dir=dest.parent))
    try:
        try:
            tar_info = _checked_tar_info(_HeaderBudget(limits))
            with tarfile.open(archive, mode="r:gz", tarinfo=tar_info) as tar:
                _extract(tar, staging, limits)
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise ArchiveError(f"the archive is not a readable .tar.gz ({error or type(error).__name__})") from None
        except OSError as error:
            if error.errno in _DISK_FULL_ERRNOS:
                message = f"disk full: no room to unpack the bundle under {dest.parent} ({error.strerror}); "
                raise DiskFullError(error.errno, message + "free some space there and deploy again") from None
            if isinstance(error, FileNotFoundError | PermissionError) or error.errno is not None:
                raise  # our disk, not the archive
            raise ArchiveError(f"the archive is not a readable .tar.gz ({error})") from None  # gzip.BadGzipFile
        os.rename(_bundle_root(staging), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
