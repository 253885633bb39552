"""Unpacking a bundle archive that nobody vouches for: only regular files, only inside the new folder."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from agent.control.deploy.archive import ArchiveError, UnpackLimits, unpack_bundle
from tests.agent.deploy_helpers import huge_header_tar_gz, link, special, tar_gz

ROOT = Path(__file__).resolve().parents[4]

MANIFEST = b'{"format": "yolo-edge-bundle"}'
LIMITS = UnpackLimits(max_bytes=1 << 20, max_members=16)


def unpack(tmp_path: Path, data: bytes, limits: UnpackLimits = LIMITS) -> Path:
    archive = tmp_path / "in.tar.gz"
    archive.write_bytes(data)
    (tmp_path / "bundles").mkdir(exist_ok=True)
    return unpack_bundle(archive, tmp_path / "bundles" / "deploy-x", limits)


def refused(tmp_path: Path, data: bytes, fragment: str, limits: UnpackLimits = LIMITS) -> str:
    with pytest.raises(ArchiveError) as caught:
        unpack(tmp_path, data, limits)
    message = str(caught.value)
    assert fragment in message, message
    assert "\n" not in message
    # Nothing is left: no bundle under its name, no staging folder, nothing written beside it.
    assert list((tmp_path / "bundles").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundles", "in.tar.gz"]
    return message


@pytest.mark.parametrize("top", ["shapes/", "", "./"])
def test_a_bundle_unpacks_from_a_folder_or_the_top(tmp_path: Path, top: str) -> None:
    data = tar_gz([(f"{top}manifest.json", MANIFEST), (f"{top}model.fp32.onnx", b"onnx" * 100)])
    dest = unpack(tmp_path, data)
    assert dest == tmp_path / "bundles" / "deploy-x"
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.fp32.onnx"]
    assert (dest / "model.fp32.onnx").read_bytes() == b"onnx" * 100
    assert oct((dest / "manifest.json").stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["deploy-x"], "no staging folder left"


def test_folders_inside_the_bundle_are_kept(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("shapes/extra")
    folder.type = tarfile.DIRTYPE
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/extra", folder), ("shapes/extra/a.txt", b"a")])
    assert (unpack(tmp_path, data) / "extra" / "a.txt").read_bytes() == b"a"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil.txt", "contains '..'"),
        ("shapes/../../evil.txt", "contains '..'"),
        ("/etc/evil.txt", "has an absolute path"),
        ("shapes\\..\\evil.txt", "backslash"),
    ],
)
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str, fragment: str) -> None:
    refused(tmp_path, tar_gz([("shapes/manifest.json", MANIFEST), (name, b"x")]), fragment)
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (link(tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link (to '/etc/passwd')"),
        (link(tarfile.SYMTYPE, "manifest.json"), "is a symbolic link"),  # even one that stays inside
        (link(tarfile.LNKTYPE, "shapes/manifest.json"), "is a hard link"),
        (special(tarfile.CHRTYPE), "is a device"),
        (special(tarfile.BLKTYPE), "is a device"),
        (special(tarfile.FIFOTYPE), "is a FIFO"),
    ],
)
def test_links_and_special_files_are_refused(tmp_path: Path, member: tarfile.TarInfo, fragment: str) -> None:
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/model.fp32.onnx", member)])
    message = refused(tmp_path, data, fragment)
    assert "shapes/model.fp32.onnx" in message, "the member is named"


def test_a_link_then_a_file_through_it_writes_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tar_gz([("shapes/dir", link(tarfile.SYMTYPE, str(outside))), ("shapes/dir/x.txt", b"x")])
    with pytest.raises(ArchiveError, match="symbolic link"):
        unpack(tmp_path, data)
    assert list(outside.iterdir()) == []


def test_a_member_twice_is_refused(tmp_path: Path) -> None:
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/manifest.json", b"{}")])
    refused(tmp_path, data, "appears twice")


def test_a_file_where_a_folder_goes_is_refused(tmp_path: Path) -> None:
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/manifest.json/x", b"x")])
    refused(tmp_path, data, "needs a folder where the archive already put a file")


def test_an_archive_that_unpacks_to_too_much_is_refused(tmp_path: Path) -> None:
    # 4 MB of zeros compress to a few KB: the limit is on what is unpacked, checked before writing.
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/model.fp32.onnx", bytes(4 << 20))])
    assert len(data) < 64 << 10
    refused(tmp_path, data, f"unpacks to more than {LIMITS.max_bytes} bytes")


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    members: list = [(f"shapes/f{i}", b"") for i in range(LIMITS.max_members + 1)]
    refused(tmp_path, tar_gz([("shapes/manifest.json", MANIFEST), *members]), "more than 16 entries")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "not a readable .tar.gz"),
        (os.urandom(4096), "not a readable .tar.gz"),
        (gzip.compress(b"not a tar file" * 100), "not a readable .tar.gz"),
        (b"\x1f\x8b" + os.urandom(4096), "not a readable .tar.gz"),
    ],
)
def test_corrupt_archives_are_refused(tmp_path: Path, data: bytes, fragment: str) -> None:
    refused(tmp_path, data, fragment)


def test_a_cut_off_archive_is_refused(tmp_path: Path) -> None:
    data = tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/model.fp32.onnx", os.urandom(200_000))])
    refused(tmp_path, data[: len(data) // 2], "")


@pytest.mark.parametrize(
    "members",
    [
        [("shapes/model.fp32.onnx", b"x")],
        [("a/manifest.json", MANIFEST), ("b/manifest.json", MANIFEST)],
        [("shapes/deeper/manifest.json", MANIFEST)],
    ],
)
def test_an_archive_without_a_bundle_is_refused(tmp_path: Path, members: list) -> None:
    refused(tmp_path, tar_gz(members), "holds no manifest.json")


def test_an_existing_destination_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "deploy-x").mkdir(parents=True)
    (tmp_path / "bundles" / "deploy-x" / "keep.txt").write_text("mine")
    with pytest.raises(OSError):
        unpack(tmp_path, tar_gz([("manifest.json", MANIFEST)]))
    assert (tmp_path / "bundles" / "deploy-x" / "keep.txt").read_text() == "mine"


# -- headers tarfile would read whole, and a disk that fills up ---------------------------------------

# Unpacks each archive in a fresh child, optionally under a file size limit (RLIMIT_FSIZE: a write
# past it stores what fits and the next fails with EFBIG, as on a full disk, without root or a mount),
# and reports per archive the outcome and how far the unpack raised the child's resident memory at
# its peak (the peak is reset before each: the imports' own peak would hide a smaller one).
UNPACK_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from agent.control.deploy.archive import UnpackLimits, unpack_bundle
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() rather than death by signal
bundles, file_limit, archives = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if file_limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

def memory_kb(field):
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

outcomes = []
for number, archive in enumerate(archives):
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM, the peak, starts again from VmRSS
    before = memory_kb("VmRSS")
    try:
        dest = unpack_bundle(Path(archive), bundles / f"deploy-{number}", UnpackLimits(1 << 30))
        outcome = {"error": None, "model_bytes": (dest / "model.fp32.onnx").stat().st_size}
    except Exception as error:
        outcome = {"error": type(error).__name__, "message": str(error)[:2000]}
    outcome["grew_kb"] = memory_kb("VmHWM") - before
    outcomes.append(outcome)
print(json.dumps(outcomes))
"""


def unpack_in_child(tmp_path: Path, archives: list[bytes], file_limit: int = 0) -> list[dict]:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    paths = []
    for number, data in enumerate(archives):
        paths.append(tmp_path / f"in-{number}.tar.gz")
        paths[-1].write_bytes(data)
    command = [sys.executable, "-c", UNPACK_CHILD, str(bundles), str(file_limit), *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert len(outcomes) == len(archives)
    assert list(bundles.iterdir()) == [], "nothing is left: no bundle, no staging folder"
    return outcomes


def _gnu_sparse_tar_gz(extension_blocks: int) -> bytes:
    """An old GNU sparse member ('S') whose map goes on for `extension_blocks` blocks of 21 entries."""
    info = tarfile.TarInfo("manifest.json")
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[482] = 1  # isextended: a block of the map follows
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)  # the checksum, over the header with its field blank
    block = bytearray(tarfile.BLOCKSIZE)
    for entry in range(21):  # offset, size: non-zero, or tarfile skips the entry
        block[entry * 24 : entry * 24 + 24] = b"%011o\0%011o\0" % (1000 + entry, 1000)
    block[504] = 1  # and another
    compressor = zlib.compressobj(wbits=31)
    parts = [compressor.compress(bytes(header))]
    parts += [compressor.compress(bytes(block)) for _ in range(extension_blocks)]
    parts.append(compressor.compress(bytes(3 * tarfile.BLOCKSIZE)) + compressor.flush())  # the last, and the end
    return b"".join(parts)


def _pax_sparse_tar_gz(numbers: int) -> bytes:
    """A GNU sparse 1.0 member: a pax header says so, and its data opens with a map of `numbers` numbers."""
    sparse_map = b"%d\n" % numbers + b"300\n" * numbers
    pax = tarfile.TarInfo("manifest.json")
    pax.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "manifest.json"}
    pax.size = len(sparse_map)
    return gzip.compress(pax.tobuf(format=tarfile.PAX_FORMAT) + sparse_map + bytes(-len(sparse_map) % 512 + 1024), 1)


def test_a_header_tarfile_would_read_whole_is_refused_before_it_is_read(tmp_path: Path) -> None:
    size = 32 << 20  # announced by a 32 KB archive; tarfile held it four times over
    archives = [
        (
            f"the archive's pax extended header '././@PaxHeader' is {size} bytes",
            huge_header_tar_gz(tarfile.XHDTYPE, size),
        ),
        (
            f"the archive's GNU long name '././@LongLink' is {size} bytes",
            huge_header_tar_gz(tarfile.GNUTYPE_LONGNAME, size),
        ),
        ("member 'manifest.json' is a sparse file", _gnu_sparse_tar_gz(20_000)),  # a map of 420,000 entries
        ("member 'manifest.json' is a sparse file", _pax_sparse_tar_gz(4_000_000)),
    ]
    assert max(len(data) for _, data in archives) < 1 << 20
    outcomes = unpack_in_child(tmp_path, [data for _, data in archives])
    for (fragment, _), outcome in zip(archives, outcomes, strict=True):
        assert outcome["error"] == "ArchiveError" and fragment in outcome["message"], outcome
        assert outcome["grew_kb"] < 8 << 10, f"{fragment}: peak memory grew {outcome['grew_kb']} KB"


def test_a_full_disk_is_reported_and_leaves_no_truncated_model(tmp_path: Path) -> None:
    file_limit = 100 << 10
    archives = [  # the model's one write stores only what fits; the model's second write fails outright
        tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/model.fp32.onnx", bytes(300 << 10))]),
        tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/model.fp32.onnx", bytes(3 << 20))]),
    ]
    for outcome in unpack_in_child(tmp_path, archives, file_limit):
        assert outcome["error"] == "DiskFullError", outcome
        message = outcome["message"]
        assert message.startswith("disk full: ") and str(tmp_path / "bundles") in message, message
        assert "free some space there and deploy again" in message and "\n" not in message


def _pax_chain_tar_gz(headers: int) -> bytes:
    """`headers` pax headers in a row before one member: tarfile recurses once per header."""
    pax = tarfile.TarInfo("x")
    pax.pax_headers = {"comment": "c"}
    one = pax.tobuf(format=tarfile.PAX_FORMAT)[:1024]  # the pax header and its text, not its member
    member = tarfile.TarInfo("manifest.json")
    member.size = len(MANIFEST)
    data = member.tobuf(format=tarfile.USTAR_FORMAT) + MANIFEST.ljust(512, b"\0") + bytes(1024)
    return gzip.compress(one * headers + data, 1)


def _member(name: str, **attributes: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for key, value in attributes.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_pax_chain_tar_gz(2000), "more than 16 entries"),
        (tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/" + "d/" * 2100 + "x", b"x")]), "over 4096 characters"),
        (tar_gz([("shapes/manifest.json", MANIFEST), ("shapes/" + "n" * 256, b"x")]), "a name part over 255 bytes"),
        (
            tar_gz([("manifest.json", MANIFEST), ("shapes", _member("shapes", type=tarfile.DIRTYPE, size=2 << 20))]),
            f"unpacks to more than {LIMITS.max_bytes} bytes",
        ),
        (
            tar_gz([("manifest.json", _member("manifest.json", size=-1))], format=tarfile.GNU_FORMAT),
            "'manifest.json' has a negative size",
        ),
    ],
    ids=["pax-chain", "long-name", "long-part", "sized-folder", "negative-size"],
)
def test_headers_that_cost_more_than_they_show_are_refused(tmp_path: Path, data: bytes, fragment: str) -> None:
    message = refused(tmp_path, data, fragment)
    assert len(message) < 600, "a long name is cut short in the message"


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_names_in_extended_headers_still_unpack(tmp_path: Path, format: int) -> None:
    name = "m" * 200 + ".onnx"  # over ustar's 100 characters: a pax header or a GNU long name holds it
    dest = unpack(tmp_path, tar_gz([("shapes/manifest.json", MANIFEST), (f"shapes/{name}", b"onnx")], format))
    assert (dest / name).read_bytes() == b"onnx"
