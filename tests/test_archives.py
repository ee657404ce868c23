"""Unpacking archives from outside: what escapes, links or explodes is refused, and nothing is left."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.data.archives import ArchiveLimits, expand, is_archive, unpack
from orchestrator.engine import OperationError

LIMITS = ArchiveLimits(max_bytes=1_000_000, max_files=10)


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            tf.addfile(info)
    return path


def test_a_zip_unpacks_to_its_member_paths(tmp_path: Path):
    archive = make_zip(tmp_path / "images.zip", {"Fire/a.jpg": b"a", "Smoke/b.jpg": b"bb", "Fire/": b""})
    files = expand(archive, LIMITS)
    assert {name: path.read_bytes() for name, path in files.items()} == {"Fire/a.jpg": b"a", "Smoke/b.jpg": b"bb"}
    assert all(path.is_relative_to(tmp_path / "images.zip.unpacked") for path in files.values())


def test_a_tar_unpacks_too(tmp_path: Path):
    archive = make_tar(tmp_path / "scenes.tar.gz", {"x/one.tif": b"1", "two.tif": b"22"})
    assert is_archive(archive)
    assert sorted(unpack(archive, tmp_path / "out", LIMITS)) == ["two.tif", "x/one.tif"]


def test_a_plain_file_is_itself(tmp_path: Path):
    plain = tmp_path / "photo.jpg"
    plain.write_bytes(b"\xff\xd8 not an archive")
    assert expand(plain, LIMITS) == {"photo.jpg": plain}


@pytest.mark.parametrize("name", ["../escaped.txt", "/etc/escaped.txt", "a/../../escaped.txt", "C:/escaped.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, name: str):
    archive = make_zip(tmp_path / "evil.zip", {"fine.txt": b"ok", name: b"pwned"})
    with pytest.raises(OperationError, match="would be written outside its folder"):
        unpack(archive, tmp_path / "inside" / "out", LIMITS)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "inside" / "escaped.txt").exists()
    assert not (tmp_path / "inside" / "out").exists(), "a refused archive leaves nothing half-unpacked"


def test_links_in_a_zip_are_refused(tmp_path: Path):
    archive = make_zip(tmp_path / "links.zip", {"a.txt": b"a"}, links={"passwd": "/etc/passwd"})
    with pytest.raises(OperationError, match="'passwd' is a link"):
        unpack(archive, tmp_path / "out", LIMITS)


def test_links_in_a_tar_are_refused(tmp_path: Path):
    archive = make_tar(tmp_path / "links.tar.gz", {"a.txt": b"a"}, symlink=("passwd", "/etc/passwd"))
    with pytest.raises(OperationError, match="'passwd' is a link or device"):
        unpack(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


def test_a_zip_bomb_is_stopped_at_the_byte_cap(tmp_path: Path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * 5_000_000})
    assert archive.stat().st_size < 20_000  # a tiny file that unpacks to 5 MB
    with pytest.raises(OperationError, match="unpacks to more than 1000000 bytes; refused"):
        unpack(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


def test_too_many_members_are_refused(tmp_path: Path):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    with pytest.raises(OperationError, match="more than 10 files"):
        unpack(archive, tmp_path / "out", LIMITS)


def test_a_corrupt_zip_is_named(tmp_path: Path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(make_zip(tmp_path / "ok.zip", {"a.txt": b"a" * 1000}).read_bytes()[:-30])
    with pytest.raises(OperationError, match="broken.zip is named like an archive but is not a readable zip"):
        expand(archive, LIMITS)
