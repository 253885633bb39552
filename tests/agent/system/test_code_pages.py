"""Start-up library pages unmapped: which mappings qualify, and a real process that keeps working after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.system import code_pages

ROOT = Path(__file__).resolve().parents[3]

SMAPS = """\
7f0000000000-7f0000200000 r-xp 00001000 08:01 11 /usr/lib/libcode.so
Rss:                 800 kB
Anonymous:             0 kB
7f0000200000-7f0000210000 r--p 00201000 08:01 11 /usr/lib/libcode.so
Rss:                  64 kB
Anonymous:            32 kB
7f0000210000-7f0000220000 rw-p 00211000 08:01 11 /usr/lib/libcode.so
Rss:                  64 kB
Anonymous:            64 kB
7f0000300000-7f0000400000 r--p 00000000 08:01 12 /usr/share/model.onnx
Rss:                 512 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 r-xp 00000000 08:01 15 /usr/lib/x86_64-linux-gnu/libssl.so.3
Rss:                 128 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 rw-s 00000000 00:05 13 /dev/video0
Rss:                1024 kB
Anonymous:             0 kB
7f0000500000-7f0000600000 r--s 00000000 00:05 14 /dev/dri/card0
Rss:                  16 kB
Anonymous:             0 kB
555500000000-555500100000 rw-p 00000000 00:00 0 [heap]
Rss:                1024 kB
Anonymous:          1024 kB
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
"""


def test_only_unwritten_read_only_file_pages_qualify() -> None:
    mappings = list(code_pages.parse_smaps(SMAPS))
    assert len(mappings) == 9
    # A data file could be unmapped and its addresses reused while the agent advises: libraries stay.
    droppable = [m.path for m in mappings if m.droppable]
    assert droppable == ["/usr/lib/libcode.so", "/usr/lib/x86_64-linux-gnu/libssl.so.3"]
    code = mappings[0]
    assert (code.start, code.end, code.perms, code.rss_kb) == (0x7F0000000000, 0x7F0000200000, "r-xp", 800)
    # Relocated read-only data holds private copies: unmapping it would bring back the file's bytes.
    assert not mappings[1].droppable and mappings[1].anonymous_kb == 32


PROBE = """
import json
from pathlib import Path

import cv2
import numpy as np

from agent.system.code_pages import release_startup_pages


def file_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024


image = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3)
expected = cv2.resize(image, (320, 240)).astype(np.int64).sum()
before = file_mb()
released = release_startup_pages()
after = file_mb()
# The code runs again from the page cache, with the same results.
again = cv2.resize(image, (320, 240)).astype(np.int64).sum()
print(json.dumps({"released": released, "before": before, "after": after, "same": bool(again == expected)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps and MADV_DONTNEED are Linux's")
def test_a_process_sheds_its_library_pages_and_keeps_computing() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # numpy and cv2 alone map tens of MB of library pages at import; most of them leave.
    assert result["released"] > 10
    assert result["after"] < result["before"] - 10
    assert result["same"]
