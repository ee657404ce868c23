"""Unpacking zip and tar archives without letting them escape, link, or explode.

Refused: members whose path leaves the target folder (zip-slip), links and device files,
more members or more bytes than the caps, and two members with the same path. Sizes are
counted while writing, not taken from the archive's own (forgeable) headers.

Every entry counts against the member cap, folders included. `tarfile` reads a GNU long name
or a pax header whole into memory, so each header's size is checked before it is read (one
that claims 100 MB compresses to 100 KB) and every header counts; sparse files are refused.
A zip's entry count is read from its end record before `zipfile` loads the central directory.
"""

from __future__ import annotations

import functools
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
# A GNU long name/link (L, K) or pax header (x, g) larger than this is refused before it is read:
# real ones hold a path (at most a few KB) and a few attributes.
MAX_TAR_HEADER_BYTES = 64 * 1024


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
    if zipfile.is_zipfile(archive):  # reads only the end record
        _check_zip_entries(archive, limits)
        members = _zip_members(archive)
    elif _is_tar(archive, limits):  # never tarfile.is_tarfile: it reads headers whole
        members = _tar_members(archive, limits)
    else:
        raise OperationError(f"{archive.name} is named like an archive but is not a readable zip or tar")
    target.mkdir(parents=True, exist_ok=False)
    files: dict[str, Path] = {}
    taken: dict[Path, str] = {}
    entries = written = 0
    try:
        for name, opener in members:
            entries += 1  # folders count too: 300,000 of them are no smaller a problem than files
            if entries > limits.max_files:
                raise OperationError(f"{archive.name} holds more than {limits.max_files} entries; refused")
            if opener is None:
                continue
            destination = _destination(target, name, archive.name)
            if destination in taken:
                raise OperationError(
                    f"{archive.name}: two members are named {_shown(name)}"
                    + (f" (and {_shown(taken[destination])})" if taken[destination] != name else "")
                    + "; refused, so that neither silently replaces the other"
                )
            taken[destination] = name
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                sink_file = destination.open("xb")
            except OSError as exc:  # a file where a folder must go, a name the file system refuses...
                raise OperationError(
                    f"{archive.name}: member {_shown(name)} cannot be unpacked ({exc.strerror or type(exc).__name__}); "
                    "it clashes with another member or is not a usable file name"
                ) from None
            with opener() as source, sink_file as sink:
                written += _copy_capped(source, sink, limits.max_bytes - written, archive.name, limits.max_bytes)
            files[name] = destination
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # nothing half-unpacked is left behind
        raise
    if not files:
        raise OperationError(f"{archive.name} holds no files")
    return files


Opener = Callable[[], ContextManager[IO[bytes]]] | None  # None: a folder, counted but not written


def _shown(name: str) -> str:
    """A member name for a message: never a 100 MB one."""
    return repr(name) if len(name) <= 200 else repr(name[:200]) + f"... ({len(name)} characters)"


def _check_zip_entries(archive: Path, limits: ArchiveLimits) -> None:
    """Refuse a zip whose end record announces more entries than the cap, before its directory is loaded."""
    try:
        # What zipfile itself reads first; the entry count is in it. Both names are zipfile's private ones,
        # which typeshed leaves out of its stubs (hence the ignores); AttributeError if a Python renames them.
        read_end_record = zipfile._EndRecData  # type: ignore[attr-defined]
        entries_total: int = zipfile._ECD_ENTRIES_TOTAL  # type: ignore[attr-defined]
        with archive.open("rb") as fp:
            end = read_end_record(fp)
    except (OSError, AttributeError):
        return  # zipfile will say what is wrong with it
    if end and end[entries_total] > limits.max_files:
        raise OperationError(
            f"{archive.name} holds {end[entries_total]} entries, more than {limits.max_files}; refused"
        )


def _zip_members(archive: Path) -> Iterator[tuple[str, Opener]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    yield info.filename, None
                    continue
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise OperationError(
                        f"{archive.name}: {_shown(info.filename)} is a link; archives may hold only files"
                    )
                yield info.filename, functools.partial(zf.open, info)
    except zipfile.BadZipFile as exc:
        raise OperationError(f"{archive.name} is not a readable zip: {exc}") from None


def _tar_members(archive: Path, limits: ArchiveLimits) -> Iterator[tuple[str, Opener]]:
    try:
        with tarfile.open(archive, tarinfo=_bounded_tarinfo(archive.name, limits)) as tf:
            for member in tf:
                if member.isdir():
                    yield member.name, None
                    continue
                if not member.isfile():
                    raise OperationError(
                        f"{archive.name}: {_shown(member.name)} is a link or device; archives may hold only files"
                    )
                yield member.name, functools.partial(_opened, tf, member)
    except tarfile.TarError as exc:
        raise OperationError(f"{archive.name} is not a readable tar: {str(exc)[:300]}") from None


def _bounded_tarinfo(archive: str, limits: ArchiveLimits) -> type[tarfile.TarInfo]:
    """A TarInfo that checks each header's size before `tarfile` reads it, and counts headers.

    `tarfile` reads a GNU long name/link or a pax header whole (`_proc_member` dispatches to the
    readers; the size is known by then), and builds GNU sparse maps block by block: a 97 KB
    .tar.gz can claim a 100 MB name. Headers of every kind are counted too, so a stream of
    headers that are not members (pax globals) is bounded like the members themselves.
    """
    max_headers = 4 * limits.max_files + 64

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tf: tarfile.TarFile):  # noqa: ANN202 - tarfile's own hook
            count = getattr(tf, "_constellation_headers", 0) + 1
            tf._constellation_headers = count  # type: ignore[attr-defined]
            if count > max_headers:
                raise OperationError(f"{archive} holds more than {limits.max_files} entries; refused")
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise OperationError(f"{archive}: {_shown(self.name)} is a sparse file; archives may hold only files")
            if self.type in _NAME_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
                raise OperationError(
                    f"{archive}: a tar header (long name or extended attributes) of {self.size} bytes, over the "
                    f"limit of {MAX_TAR_HEADER_BYTES}; refused"
                )
            # typeshed leaves tarfile's private hooks out of its stubs (hence the ignore)
            return super()._proc_member(tf)  # type: ignore[misc]

    return BoundedTarInfo


_NAME_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


def _is_tar(archive: Path, limits: ArchiveLimits) -> bool:
    """True if `archive` opens as a tar (plain or compressed), reading its first header the bounded way.

    Not `tarfile.is_tarfile`: that reads the first member with the stock TarInfo, long name and all.
    """
    try:
        with tarfile.open(archive, tarinfo=_bounded_tarinfo(archive.name, limits)):
            return True
    except (tarfile.TarError, OSError, EOFError):
        return False


@contextmanager
def _opened(tf: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[IO[bytes]]:
    stream = tf.extractfile(member)
    if stream is None:
        raise OperationError("an archive member could not be read")
    with stream:
        yield stream


def _destination(target: Path, name: str, archive: str) -> Path:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise OperationError(f"{archive}: member {_shown(name)} would be written outside its folder; refused")
    destination = target.joinpath(*parts).resolve()
    if not destination.is_relative_to(target.resolve()):
        raise OperationError(f"{archive}: member {_shown(name)} would be written outside its folder; refused")
    return destination


def _copy_capped(source: IO[bytes], sink: IO[bytes], room: int, archive: str, cap: int) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > room:
            raise OperationError(f"{archive} unpacks to more than {cap} bytes; refused (archive bomb?)")
        sink.write(chunk)
    return copied
