"""Unpacking zip and tar archives without letting them escape, link, or explode.

Refused: members whose path leaves the target folder (zip-slip), links and device files,
more members or more bytes than the caps. Sizes are counted while writing, not taken from
the archive's own (forgeable) headers.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from orchestrator.engine import OperationError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 10 * 1024**3
    max_files: int = 100_000


def is_archive(path: Path) -> bool:
    """True for a file named like a zip or tar archive."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def expand(path: Path, limits: ArchiveLimits) -> dict[str, Path]:
    """A downloaded file as dataset entries: an archive's members, or the file itself."""
    if is_archive(path):
        return unpack(path, path.with_name(path.name + ".unpacked"), limits)
    return {path.name: path}


def unpack(archive: Path, target: Path, limits: ArchiveLimits) -> dict[str, Path]:
    """Extract `archive` into the new folder `target`; return its files by their path inside the archive."""
    if zipfile.is_zipfile(archive):
        members = _zip_members(archive)
    elif tarfile.is_tarfile(archive):
        members = _tar_members(archive)
    else:
        raise OperationError(f"{archive.name} is named like an archive but is not a readable zip or tar")
    target.mkdir(parents=True, exist_ok=False)
    files: dict[str, Path] = {}
    written = 0
    try:
        for name, opener in members:
            if len(files) >= limits.max_files:
                raise OperationError(f"{archive.name} holds more than {limits.max_files} files; refused")
            destination = _destination(target, name, archive.name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with opener() as source, destination.open("xb") as sink:
                written += _copy_capped(source, sink, limits.max_bytes - written, archive.name, limits.max_bytes)
            files[name] = destination
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # nothing half-unpacked is left behind
        raise
    if not files:
        raise OperationError(f"{archive.name} holds no files")
    return files


def _zip_members(archive: Path) -> Iterator[tuple[str, Callable[[], ContextManager[IO[bytes]]]]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise OperationError(f"{archive.name}: {info.filename!r} is a link; archives may hold only files")
                yield info.filename, (lambda info=info: zf.open(info))
    except zipfile.BadZipFile as exc:
        raise OperationError(f"{archive.name} is not a readable zip: {exc}") from None


def _tar_members(archive: Path) -> Iterator[tuple[str, Callable[[], ContextManager[IO[bytes]]]]]:
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise OperationError(
                        f"{archive.name}: {member.name!r} is a link or device; archives may hold only files"
                    )
                yield member.name, (lambda member=member: _opened(tf.extractfile(member)))
    except tarfile.TarError as exc:
        raise OperationError(f"{archive.name} is not a readable tar: {exc}") from None


@contextmanager
def _opened(stream: IO[bytes] | None) -> Iterator[IO[bytes]]:
    if stream is None:
        raise OperationError("an archive member could not be read")
    with stream:
        yield stream


def _destination(target: Path, name: str, archive: str) -> Path:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise OperationError(f"{archive}: member {name!r} would be written outside its folder; refused")
    destination = target.joinpath(*parts).resolve()
    if not destination.is_relative_to(target.resolve()):
        raise OperationError(f"{archive}: member {name!r} would be written outside its folder; refused")
    return destination


def _copy_capped(source: IO[bytes], sink: IO[bytes], room: int, archive: str, cap: int) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > room:
            raise OperationError(f"{archive} unpacks to more than {cap} bytes; refused (archive bomb?)")
        sink.write(chunk)
    return copied
