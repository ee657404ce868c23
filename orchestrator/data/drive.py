"""Google Drive downloads through the real google-api-python-client (Drive v3).

Credentials come from the server's environment only, read when a client is built: a
service account (GOOGLE_APPLICATION_CREDENTIALS, read-only scope) for files shared with
it, else an API key (CONSTELLATION_GOOGLE_API_KEY) for public files. Neither ever appears
in a message or a log line: errors are built from the HTTP status and Google's own message,
never from the exception's text (which holds the request URL, and so the key).

Files stream to disk in CHUNK_SIZE ranges, so memory holds one chunk, never a whole file.
Folders are read recursively; Google Docs, Sheets, Slides, shortcuts... have no file content
to download and are skipped with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httplib2
from google.auth.exceptions import GoogleAuthError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload

from orchestrator.data import archives
from orchestrator.data.archives import ArchiveLimits
from orchestrator.engine import OperationError

CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
API_KEY_ENV = "CONSTELLATION_GOOGLE_API_KEY"
SCOPES = ("https://www.googleapis.com/auth/drive.readonly",)
ID_PATTERN = r"^[A-Za-z0-9_-]{10,200}$"
FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_MIME = "application/vnd.google-apps."
CHUNK_SIZE = 8 * 1024 * 1024  # bytes per ranged request: the most a download holds in memory
PAGE_SIZE = 1000  # Drive's largest page of a folder listing
NUM_RETRIES = 3  # the client's own backoff, on 429 and 5xx answers
LIST_FIELDS = "nextPageToken, files(id, name, mimeType, size)"
FILE_FIELDS = "id, name, mimeType, size"

_ID = re.compile(ID_PATTERN)
_KEY_IN_URL = re.compile(r"(?i)([?&]key=)[^&\s'\"]+")
_UNSAFE = re.compile(r"[/\\\x00-\x1f]+")


class _RedactApiKeys(logging.Filter):
    """The client logs request URLs (debug; warnings on retries); an API key rides in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _KEY_IN_URL.search(message):
            record.msg, record.args = redact(message), None
        return True


_REDACT = _RedactApiKeys()
for _name in ("googleapiclient.discovery", "googleapiclient.http"):
    logging.getLogger(_name).addFilter(_REDACT)  # addFilter ignores a filter already there


def redact(text: str) -> str:
    """`text` with any `key=` query value replaced."""
    return _KEY_IN_URL.sub(r"\1<redacted>", text)


@dataclass(frozen=True)
class Drive:
    """A Drive v3 client and, for messages, who it reads as (never the secret itself)."""

    service: Any
    identity: str


@dataclass(frozen=True)
class DriveItem:
    id: str
    name: str
    mime_type: str
    size: int | None

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    @property
    def is_google_document(self) -> bool:
        """A Docs/Sheets/Slides file, shortcut...: no bytes to download, only exports."""
        return self.mime_type.startswith(GOOGLE_APPS_MIME) and not self.is_folder


def connect(api_endpoint: str | None, environ: Mapping[str, str]) -> Drive:
    """A Drive v3 client authenticated from `environ`: a service account, else an API key."""
    # The endpoint replaces the whole base URL (https://www.googleapis.com/drive/v3/): keep its last slash.
    options = {"api_endpoint": api_endpoint.rstrip("/") + "/"} if api_endpoint else None
    # The discovery document shipped in the package: building a client needs no network.
    common = {"client_options": options, "static_discovery": True, "cache_discovery": False}
    key_file = environ.get(CREDENTIALS_ENV)
    if key_file:
        credentials = _service_account(key_file)
        service = build("drive", "v3", credentials=credentials, **common)
        return Drive(service, f"service account {credentials.service_account_email}")
    api_key = environ.get(API_KEY_ENV)
    if api_key:
        return Drive(build("drive", "v3", developerKey=api_key, **common), "an API key (public files only)")
    raise OperationError(
        f"Google Drive is not configured on this server: set {CREDENTIALS_ENV} to a service-account "
        f"key file (for files shared with that account) or {API_KEY_ENV} to an API key (for public files)"
    )


def _service_account(key_file: str) -> service_account.Credentials:
    if not Path(key_file).is_file():
        raise OperationError(f"{CREDENTIALS_ENV} names {key_file}, which is not a readable file")
    try:
        return service_account.Credentials.from_service_account_file(key_file, scopes=list(SCOPES))
    except (ValueError, KeyError, OSError) as exc:
        # google-auth's messages say which field is missing; they never quote the key.
        reason = str(exc)[:200] or type(exc).__name__
        raise OperationError(
            f"{CREDENTIALS_ENV} names {key_file}, which is not a service-account key file: {reason}"
        ) from None


def check_id(value: str, parameter: str) -> str:
    if not _ID.match(value):
        raise OperationError(f"{parameter} {value[:80]!r} is not a Google Drive id (letters, digits, - and _)")
    return value


def item(drive: Drive, item_id: str, kind: str) -> DriveItem:
    """The metadata of one file or folder."""
    with _google_errors(drive, f"{kind} {item_id!r}"):
        raw = drive.service.files().get(fileId=item_id, fields=FILE_FIELDS, supportsAllDrives=True).execute()
    return _item(raw)


def download_file(drive: Drive, file_id: str, out_dir: Path, check_cancelled: Callable[[], None]) -> Path:
    """Download one Drive file into `out_dir`; return its path (named as in Drive)."""
    found = item(drive, check_id(file_id, "file_id"), "file")
    if found.is_folder:
        raise OperationError(f"Google Drive id {file_id!r} is a folder ({found.name!r}); give it as folder_id")
    if found.is_google_document:
        raise OperationError(_document_message(found))
    return _download(drive, found, out_dir / found.id / _safe(found.name, found.id), check_cancelled)


def download_folder(
    drive: Drive, folder_id: str, out_dir: Path, check_cancelled: Callable[[], None], log: logging.Logger
) -> dict[str, Path]:
    """Download every file under a Drive folder, subfolders included; keyed by path inside the folder."""
    folder = item(drive, check_id(folder_id, "folder_id"), "folder")
    if not folder.is_folder:
        raise OperationError(
            f"Google Drive id {folder_id!r} is a file ({folder.name!r}), not a folder; give it as file_id"
        )
    files: dict[str, Path] = {}
    skipped = 0
    for path, found in walk(drive, folder, check_cancelled):
        if found.is_google_document:
            skipped += 1
            log.info(f"skipped {path!r} in Drive folder {folder.name!r}: {_document_message(found)}")
            continue
        files[path] = _download(drive, found, out_dir / found.id / _safe(found.name, found.id), check_cancelled)
    if not files:
        raise OperationError(f"Google Drive folder {folder_id!r} ({folder.name!r}) holds no downloadable files")
    log.info(f"downloaded {len(files)} files from Drive folder {folder.name!r}; skipped {skipped} Google documents")
    return files


def expand_each(files: Mapping[str, Path], limits: ArchiveLimits) -> dict[str, Path]:
    """A folder's files with each archive replaced by its members, named `<archive's path>/<member>`."""
    expanded: dict[str, Path] = {}
    for name, path in files.items():
        members = archives.expand(path, limits)
        if members == {path.name: path}:
            expanded[name] = path
        else:
            expanded.update({f"{name}/{member}": member_path for member, member_path in members.items()})
    return expanded


def walk(drive: Drive, folder: DriveItem, check_cancelled: Callable[[], None]) -> Iterator[tuple[str, DriveItem]]:
    """Every non-folder item under `folder`, with its path inside it, breadth first."""
    pending = [("", folder)]
    seen = {folder.id}  # an item may have several parents: never read a folder twice
    taken: set[str] = set()
    while pending:
        prefix, current = pending.pop(0)
        for child in sorted(_children(drive, current, check_cancelled), key=lambda c: (c.name, c.id)):
            path = _unique(prefix + _safe(child.name, child.id), child.id, taken)
            if child.is_folder:
                if child.id not in seen:
                    seen.add(child.id)
                    pending.append((path + "/", child))
            else:
                yield path, child


def _children(drive: Drive, folder: DriveItem, check_cancelled: Callable[[], None]) -> Iterator[DriveItem]:
    files = drive.service.files()
    token = None
    while True:
        check_cancelled()
        with _google_errors(drive, f"folder {folder.id!r}"):
            page = files.list(
                q=f"'{folder.id}' in parents and trashed = false",  # the id was checked: no quote can get in
                pageToken=token,
                pageSize=PAGE_SIZE,
                fields=LIST_FIELDS,
                supportsAllDrives=True,
                includeItemsFromAllDrives=True,
            ).execute()
        yield from (_item(raw) for raw in page.get("files", []))
        token = page.get("nextPageToken")
        if not token:
            return


def _download(drive: Drive, found: DriveItem, target: Path, check_cancelled: Callable[[], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    request = drive.service.files().get_media(fileId=found.id, supportsAllDrives=True)
    try:
        with target.open("wb") as sink, _google_errors(drive, f"file {found.id!r} ({found.name!r})"):
            downloader = MediaIoBaseDownload(sink, request, chunksize=CHUNK_SIZE)
            done = False
            while not done:
                check_cancelled()
                _, done = downloader.next_chunk(num_retries=NUM_RETRIES)
    except BaseException:
        target.unlink(missing_ok=True)  # never leave a truncated file behind
        raise
    return target


@contextmanager
def _google_errors(drive: Drive, what: str) -> Iterator[None]:
    """Turn the client's failures into messages naming the item, without the URL (it may hold the key)."""
    try:
        yield
    except HttpError as exc:
        reason = redact(exc.reason or "")[:300]
        if exc.status_code == 404:
            raise OperationError(
                f"Google Drive has no {what}, or it is not shared with this server's {drive.identity} "
                f"(HTTP 404: {reason})"
            ) from None
        raise OperationError(f"Google Drive refused {what} (HTTP {exc.status_code}: {reason})") from None
    except TransportError as exc:
        raise OperationError(
            f"could not reach Google's token service for this server's {drive.identity} while reading {what}: "
            f"{redact(_first_text(exc))[:300]}"
        ) from None
    except GoogleAuthError as exc:
        raise OperationError(
            f"Google did not accept this server's {drive.identity} while reading {what}: "
            f"{redact(_first_text(exc))[:300]}"
        ) from None
    except (httplib2.HttpLib2Error, OSError) as exc:
        raise OperationError(f"reading Google Drive {what} failed: {redact(str(exc))[:300]}") from None


def _first_text(exc: Exception) -> str:
    """google-auth puts its message first and the raw response after it."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__


def _item(raw: Mapping[str, Any]) -> DriveItem:
    size = raw.get("size")
    return DriveItem(raw["id"], raw.get("name") or raw["id"], raw.get("mimeType", ""), int(size) if size else None)


def _document_message(found: DriveItem) -> str:
    return (
        f"{found.name!r} ({found.id}) is a Google document ({found.mime_type}) with no file content "
        "to download; save or export it as a file in Drive first"
    )


def _safe(name: str, item_id: str) -> str:
    """A Drive name as one path segment: Drive allows '/' and '..' in names, a folder does not."""
    cleaned = _UNSAFE.sub("_", name).strip()
    return item_id if cleaned in ("", ".", "..") else cleaned


def _unique(path: str, item_id: str, taken: set[str]) -> str:
    """Drive lets a folder hold two items of the same name; the later one gets its id appended."""
    if path in taken:
        stem, dot, suffix = path.rpartition(".")
        path = f"{stem} ({item_id}).{suffix}" if dot and "/" not in suffix else f"{path} ({item_id})"
    taken.add(path)
    return path
