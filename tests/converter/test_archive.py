"""`yolo-edge-convert --archive`: the bundle as one reproducible .tar.gz, written atomically, and its sha256."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

import converter.cli
from agent.bundle import load_bundle, verify_model_file
from agent.control.deploy.archive import UnpackLimits, unpack_bundle
from converter.archive import archive_path, write_archive
from converter.errors import ConvertError
from converter.pipeline import ConvertOutcome
from tests.agent.deploy_helpers import reshape_model, write_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    model = reshape_model(tmp_path / "m.onnx", (64, 64), (1, 8, 1536))
    root = write_bundle(tmp_path / "bundles" / "shapes", model, (64, 64), "shapes")
    (root / "report.md").write_text("# report\n")
    return root


def test_the_archive_holds_the_bundle_in_one_folder(bundle: Path) -> None:
    archive = write_archive(bundle)
    assert archive.path == bundle.parent / "shapes.tar.gz" == archive_path(bundle)
    assert archive.sha256 == hashlib.sha256(archive.path.read_bytes()).hexdigest()
    assert archive.bytes == archive.path.stat().st_size
    with tarfile.open(archive.path, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["shapes", *(f"shapes/{n}" for n in sorted(os.listdir(bundle)))]
    assert all(m.isdir() or m.isreg() for m in members)
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in members} == {(0, 0, "", 0)}
    assert oct(archive.path.stat().st_mode & 0o777) == oct(0o644), "a web server must be able to read it"


def test_the_same_bundle_gives_the_same_sha256(bundle: Path, tmp_path: Path) -> None:
    first = write_archive(bundle)
    os.utime(bundle / "manifest.json", (1, 1))  # times do not count, contents do
    again = write_archive(bundle, tmp_path / "again.tar.gz")
    assert again.sha256 == first.sha256
    (bundle / "report.md").write_text("# another report\n")
    assert write_archive(bundle, tmp_path / "changed.tar.gz").sha256 != first.sha256


def test_the_agent_unpacks_and_verifies_it(bundle: Path, tmp_path: Path) -> None:
    archive = write_archive(bundle)
    (tmp_path / "state").mkdir()
    unpacked = unpack_bundle(archive.path, tmp_path / "state" / "deploy-1", UnpackLimits(10 << 20))
    assert verify_model_file(load_bundle(unpacked), "fp32") == unpacked / "model.fp32.onnx"


def test_links_in_a_bundle_are_refused_and_the_old_archive_stays(bundle: Path) -> None:
    out = archive_path(bundle)
    out.write_bytes(b"old archive")
    (bundle / "extra.onnx").symlink_to("/etc/passwd")
    with pytest.raises(ConvertError, match=r"extra\.onnx is not a regular file"):
        write_archive(bundle)
    assert out.read_bytes() == b"old archive", "replaced only by a complete archive"
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["shapes", "shapes.tar.gz"], "no temp file left"


def test_a_write_that_fails_halfway_leaves_nothing(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", disk_full)
    with pytest.raises(ConvertError, match=r"cannot write .*shapes\.tar\.gz: No space left on device"):
        write_archive(bundle)
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["shapes"]


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="is not a bundle"):
        write_archive(tmp_path)


def test_the_cli_writes_the_archive_and_prints_the_deploy_command(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The conversion itself is tested in test_convert_cli.py; here it stands for one that wrote `bundle`.
    monkeypatch.setattr(converter.cli, "convert", lambda request: ConvertOutcome(bundle, True, "passed", None))  # type: ignore[arg-type]
    code = converter.cli.main(["w.pt", "--out", str(bundle), "--archive"])
    output = capsys.readouterr().out
    archive = archive_path(bundle)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert code == 0
    assert f"archive: {archive} (" in output
    assert f"sha256: {sha}\n" in output
    assert f'-t yolo-edge/DEVICE/deploy -m \'{{"url": "https://HOST/shapes.tar.gz", "sha256": "{sha}"}}\'' in output


def test_the_cli_writes_no_archive_unless_asked(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(converter.cli, "convert", lambda request: ConvertOutcome(bundle, True, "passed", None))  # type: ignore[arg-type]
    assert converter.cli.main(["w.pt", "--out", str(bundle)]) == 0
    assert not archive_path(bundle).exists() and "sha256:" not in capsys.readouterr().out
