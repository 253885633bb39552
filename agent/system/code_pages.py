"""Library pages touched only while starting, unmapped after the imports and again once started.

Importing numpy, cv2, onnxruntime and paho, and building an onnxruntime session (its kernel registry,
the graph optimizers) reads some 60 MB of shared-library code and read-only data into the agent's
resident set, of which a frame loop then touches about 5 MB: YOLOv8s INT8 at 640, 72 MB file-backed
resident after 30 frames, 5.4 MB of it referenced in the 20 frames before. The kernel keeps pages a
process has mapped until memory runs short, so they counted in its RSS for as long as it ran.

Unmapping them (MADV_DONTNEED on shared libraries' mappings that are neither writable nor written) leaves
the pages in the page cache, where they are shared with other processes and reclaimed first; the
ones the frame loop needs come back as minor faults on the first frame (about 16 MB, fault-around
maps 64 KiB at a time). Mappings holding private copies (relocated data) are never touched: only
those with no anonymous page, whose contents the file holds. Linux only; elsewhere it does nothing.
YOLOv8s INT8 at 640: peak RSS 157 -> 116 MB, now the frame loop's own (steady 114 MB), of which the
pages the frame loop uses from the libraries are about 23 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("yolo_edge.memory")

MADV_DONTNEED = 4  # Linux's asm-generic/mman-common.h
SMAPS = Path("/proc/self/smaps")
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
# Shared libraries only: nothing unmaps them while the agent runs (Python never unloads an extension), so
# no other mapping can take their place between reading smaps and advising.
_LIBRARY = re.compile(r"\.so(\.[0-9.]+)?$")


@dataclass(frozen=True)
class FileMapping:
    """One mapping of /proc/self/smaps. rss_kb and anonymous_kb: resident, and of that privately copied."""

    start: int
    end: int
    perms: str
    path: str
    rss_kb: int
    anonymous_kb: int

    @property
    def droppable(self) -> bool:
        """A shared library's pages that nobody wrote: the file holds them, so unmapping loses nothing."""
        return (
            self.path.startswith("/")
            and _LIBRARY.search(self.path) is not None
            and "w" not in self.perms
            and self.anonymous_kb == 0
            and self.rss_kb > 0
        )


def parse_smaps(text: str) -> Iterator[FileMapping]:
    start = end = rss = anonymous = 0
    perms = path = ""
    seen = False
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            if seen:
                yield FileMapping(start, end, perms, path, rss, anonymous)
            start, end = int(header.group(1), 16), int(header.group(2), 16)
            perms, path, rss, anonymous, seen = header.group(3), header.group(4), 0, 0, True
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Anonymous:"):
            anonymous = int(line.split()[1])
    if seen:
        yield FileMapping(start, end, perms, path, rss, anonymous)


def _find_madvise() -> Callable[[int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        madvise = ctypes.CDLL(name, use_errno=True).madvise if name else None
    except (OSError, AttributeError):
        return None
    if madvise is not None:
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        madvise.restype = ctypes.c_int
    return madvise


_madvise = _find_madvise()


def release_startup_pages() -> float:
    """Unmap the resident pages of unwritten, read-only file mappings; returns the MB unmapped."""
    if _madvise is None:
        return 0.0
    try:
        text = SMAPS.read_text()
    except OSError:
        return 0.0
    released_kb = 0
    for mapping in parse_smaps(text):
        if mapping.droppable and _madvise(mapping.start, mapping.end - mapping.start, MADV_DONTNEED) == 0:
            released_kb += mapping.rss_kb
    released = released_kb / 1024
    log.debug("unmapped %.1f MB of library pages used while starting", released)
    return released
