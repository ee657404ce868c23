"""Unpacking archives from outside: what escapes, links or explodes is refused, and nothing is left."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.engine import OperationError
from orchestrator.sources.archives import ArchiveLimits, expand, is_archive, unpack

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
    with pytest.raises(OperationError, match="more than 10; refused"):
        unpack(archive, tmp_path / "out", LIMITS)


def test_a_corrupt_zip_is_named(tmp_path: Path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(make_zip(tmp_path / "ok.zip", {"a.txt": b"a" * 1000}).read_bytes()[:-30])
    with pytest.raises(OperationError, match="broken.zip is named like an archive but is not a readable zip"):
        expand(archive, LIMITS)


# Issue 11: headers, entries and names that cost memory or leak paths before any cap applied


def tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    """One raw ustar header block, so that a test can claim what tarfile itself would never write."""
    block = bytearray(512)
    block[0 : len(name[:100])] = name[:100]
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def one_file_and_end() -> bytes:
    return tar_header(b"x.txt", 1, b"0") + b"x" + b"\0" * 511 + b"\0" * 1024


@pytest.fixture(scope="module")
def long_name_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~100 KB .tar.gz whose GNU long-name header holds 100 MB of name."""
    path = tmp_path_factory.mktemp("bomb") / "longname.tar.gz"
    size = 100 * 1024**2
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(tar_header(b"././@LongLink", size, b"L"))
        chunk = b"a" * (1 << 20)
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(one_file_and_end())
    return path


def test_a_huge_long_name_header_is_refused_before_it_is_read(tmp_path: Path, long_name_bomb: Path):
    """Before: tarfile read the 100 MB name whole (664-838 MB of memory), and the error held all of it."""
    assert long_name_bomb.stat().st_size < 200_000
    with pytest.raises(OperationError) as refused:
        unpack(long_name_bomb, tmp_path / "out", LIMITS)
    message = str(refused.value)
    assert message == (
        "longname.tar.gz: a tar header (long name or extended attributes) of 104857600 bytes, "
        "over the limit of 65536; refused"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", [b"x", b"g", b"K"])
def test_huge_pax_and_long_link_headers_are_refused_too(tmp_path: Path, kind: bytes):
    path = tmp_path / "pax.tar"
    path.write_bytes(tar_header(b"././@PaxHeader", 50 * 1024**2, kind))  # the claim alone is enough
    with pytest.raises(OperationError, match="a tar header .* of 52428800 bytes, over the limit"):
        unpack(path, tmp_path / "out", LIMITS)


def test_a_long_name_within_the_cap_still_works(tmp_path: Path):
    name = "deep/" * 60 + "file.txt"  # 308 characters: needs a GNU long name or a pax header
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"long{fmt}.tar.gz"
        with tarfile.open(path, "w:gz", format=fmt) as tf:
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"ok"))
        files = unpack(path, tmp_path / f"out{fmt}", LIMITS)
        assert files[name].read_bytes() == b"ok"


def test_folders_count_against_the_entry_cap(tmp_path: Path):
    """Before: 300,000 folders in a 1.4 MB archive passed a 10-file cap."""
    path = tmp_path / "dirs.tar.gz"
    template = bytearray(tar_header(b"d0000000/", 0, b"5"))
    base = sum(template) - sum(template[148:156]) + 8 * 32 - sum(b"d0000000/")  # the checksum, less the name
    with gzip.open(path, "wb", compresslevel=1) as out:
        for i in range(300_000):
            name = b"d%07d/" % i
            template[0:9] = name
            template[148:156] = b"%06o\0 " % (base + sum(name))
            out.write(template)
        out.write(one_file_and_end())
    assert path.stat().st_size < 3_000_000
    with pytest.raises(OperationError, match="dirs.tar.gz holds more than 10 entries; refused"):
        unpack(path, tmp_path / "out", LIMITS)
    zipped = make_zip(tmp_path / "dirs.zip", {**{f"d{i}/": b"" for i in range(20)}, "x.txt": b"x"})
    with pytest.raises(OperationError, match="dirs.zip holds 21 entries, more than 10; refused"):
        unpack(zipped, tmp_path / "out2", LIMITS)


def test_duplicate_member_names_fail_clearly(tmp_path: Path):
    """Before: a raw FileExistsError naming the server's path."""
    path = tmp_path / "twice.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for body in (b"one", b"two"):
            info = tarfile.TarInfo("same.txt")
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    with pytest.raises(OperationError) as refused:
        unpack(path, tmp_path / "out", LIMITS)
    assert str(refused.value) == (
        "twice.tar.gz: two members are named 'same.txt'; refused, so that neither silently replaces the other"
    )
    assert str(tmp_path) not in str(refused.value)
    with pytest.warns(UserWarning, match="Duplicate name"):
        zipped = make_zip(tmp_path / "twice.zip", {"a.txt": b"1"})
        with zipfile.ZipFile(zipped, "a") as zf:
            zf.writestr("a.txt", b"2")
    with pytest.raises(OperationError, match="twice.zip: two members are named 'a.txt'"):
        unpack(zipped, tmp_path / "out2", LIMITS)
    clash = make_tar(tmp_path / "clash.tar.gz", {"a": b"file", "a/b.txt": b"under a file"})
    with pytest.raises(OperationError, match=r"clash.tar.gz: member 'a/b.txt' cannot be unpacked") as refused:
        unpack(clash, tmp_path / "out3", LIMITS)
    assert str(tmp_path) not in str(refused.value)


def test_sparse_members_are_refused(tmp_path: Path):
    path = tmp_path / "sparse.tar"
    path.write_bytes(tar_header(b"holes.bin", 0, b"S") + b"\0" * 1024)
    with pytest.raises(OperationError, match="'holes.bin' is a sparse file"):
        unpack(path, tmp_path / "out", LIMITS)


def test_stored_error_messages_are_cut(tmp_path: Path):
    """Before: the 100 MB error was stored as the run's error and served by GET /runs/{id}."""
    from orchestrator import runs
    from orchestrator.engine import InstructionFailed
    from orchestrator.engine.plan import Plan

    huge = "a" * 5_000_000
    assert runs.clip(huge) == "a" * 2000 + "... [4998000 more characters cut]"
    assert runs.clip("short") == "short"
    progress = runs.ProgressLog(tmp_path, Plan(shared={}, roots=[]))
    progress.fail(InstructionFailed("/instructions/0", "import_from_url", huge))
    stored = runs.read_json(tmp_path / runs.PROGRESS)["error"]["message"]
    assert len(stored) < 2100 and stored.endswith("more characters cut]")
