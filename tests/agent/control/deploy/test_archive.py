"""Unpacking a bundle archive that nobody vouches for: only regular files, only inside the new folder."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import pytest

from agent.control.deploy.archive import ArchiveError, UnpackLimits, unpack_bundle
from tests.agent.deploy_helpers import link, special, tar_gz

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
