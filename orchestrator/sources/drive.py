"""Google Drive downloads through the real google-api-python-client (Drive v3).

Credentials come from the server's environment only, read when a client is built: a
service account (GOOGLE_APPLICATION_CREDENTIALS, read-only scope) for files shared with
it, else an API key (CONSTELLATION_GOOGLE_API_KEY) for public files. Neither ever appears
in a message or a log line: errors are built from the HTTP status and Google's own message,
never from the exception's text (which holds the request URL, and so the key).

With neither, a file shared as "anyone with the link" still downloads, as the original
Agentic Earth pipelines (and `gdown`) did: by its id from Drive's public download endpoint
(https://drive.usercontent.google.com/download?id=<id>&export=download; the setting
CONSTELLATION_GOOGLE_DOWNLOAD_URL replaces it), confirming the "can't scan this file for
viruses" page that Drive shows instead of a large file, streamed with the same size cap as
downloads by URL. Listing a folder needs the API, so folders need credentials.

Files stream to disk in CHUNK_SIZE ranges, so memory holds one chunk, never a whole file.
Folders are read recursively; Google Docs, Sheets, Slides, shortcuts... have no file content
to download and are skipped with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httplib2
import httpx
from google.auth.exceptions import GoogleAuthError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload

from orchestrator import names
from orchestrator.engine import OperationError
from orchestrator.sources import archives
from orchestrator.sources.archives import ArchiveLimits

CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
API_KEY_ENV = "CONSTELLATION_GOOGLE_API_KEY"
SCOPES = ("https://www.googleapis.com/auth/drive.readonly",)
ID_PATTERN = names.DRIVE_ID_PATTERN
FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_MIME = "application/vnd.google-apps."
CHUNK_SIZE = 8 * 1024 * 1024  # bytes per ranged request: the most a download holds in memory
PAGE_SIZE = 1000  # Drive's largest page of a folder listing
NUM_RETRIES = 3  # the client's own backoff, on 429 and 5xx answers
LIST_FIELDS = "nextPageToken, files(id, name, mimeType, size)"
FILE_FIELDS = "id, name, mimeType, size"
# Drive's public download endpoint (drive.google.com/uc?export=download redirects there).
PUBLIC_DOWNLOAD_URL = "https://drive.usercontent.google.com/download"
PUBLIC_MAX_BYTES = 2 * 1024**3  # the default cap, as for downloads by URL (CONSTELLATION_URL_MAX_BYTES)
PUBLIC_TIMEOUT_S = 30.0
PAGE_MAX_BYTES = 1024 * 1024  # the most of an HTML page (a warning or an error) read
CONFIRM_STEPS = 2  # "download anyway" pages followed before giving up

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
class PublicDownloads:
    """Where public files download from without credentials, and how much of one is accepted."""

    url: str = PUBLIC_DOWNLOAD_URL
    max_bytes: int = PUBLIC_MAX_BYTES
    timeout_s: float = PUBLIC_TIMEOUT_S


@dataclass(frozen=True)
class Drive:
    """A Drive v3 client (None: no credentials, public files only) and, for messages, who it reads as."""

    service: Any
    identity: str
    public: PublicDownloads = field(default_factory=PublicDownloads)


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


def connect(api_endpoint: str | None, environ: Mapping[str, str], public: PublicDownloads | None = None) -> Drive:
    """A Drive v3 client authenticated from `environ`: a service account, else an API key, else none.

    Without credentials, files shared with anyone who has the link download from `public`.
    """
    public = public or PublicDownloads()
    # The endpoint replaces the whole base URL (https://www.googleapis.com/drive/v3/): keep its last slash.
    options = {"api_endpoint": api_endpoint.rstrip("/") + "/"} if api_endpoint else None
    # The discovery document shipped in the package: building a client needs no network.
    common = {"client_options": options, "static_discovery": True, "cache_discovery": False}
    key_file = environ.get(CREDENTIALS_ENV)
    if key_file:
        credentials = _service_account(key_file)
        service = build("drive", "v3", credentials=credentials, **common)
        return Drive(service, f"service account {credentials.service_account_email}", public)
    api_key = environ.get(API_KEY_ENV)
    if api_key:
        return Drive(build("drive", "v3", developerKey=api_key, **common), "an API key (public files only)", public)
    return Drive(None, "no credentials (files shared with anyone who has the link)", public)


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
    if drive.service is None:
        return download_public_file(drive.public, check_id(file_id, "file_id"), out_dir, check_cancelled)
    found = item(drive, check_id(file_id, "file_id"), "file")
    if found.is_folder:
        raise OperationError(f"Google Drive id {file_id!r} is a folder ({found.name!r}); give it as folder_id")
    if found.is_google_document:
        raise OperationError(_document_message(found))
    return _download(drive, found, out_dir / found.id / _safe(found.name, found.id), check_cancelled)


def download_folder(
    drive: Drive,
    folder_id: str,
    out_dir: Path,
    check_cancelled: Callable[[], None],
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> dict[str, Path]:
    """Download every file under a Drive folder, subfolders included; keyed by path inside the folder."""
    check_id(folder_id, "folder_id")
    if drive.service is None:
        raise OperationError(
            f"Google Drive folder {folder_id!r}: reading a folder needs an API key or a service account, and "
            f"this server has neither (set {API_KEY_ENV} for public folders, or {CREDENTIALS_ENV} to a "
            "service-account key file); without them only single public files download, by file_id"
        )
    folder = item(drive, folder_id, "folder")
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


# --- public files, without credentials ------------------------------------------------------------


def download_public_file(
    public: PublicDownloads, file_id: str, out_dir: Path, check_cancelled: Callable[[], None]
) -> Path:
    """Download a file shared with anyone who has the link, as a browser (or gdown) does.

    Drive answers with the file (Content-Disposition: attachment), or, for a file too large to
    scan for viruses, with an HTML page whose "Download anyway" form carries the confirmation to
    send back; any other page means the file is missing or not public.
    """
    url, params = public.url, {"id": file_id, "export": "download"}
    what = f"Google Drive file {file_id!r}"
    try:
        with httpx.Client(timeout=public.timeout_s, follow_redirects=True) as client:
            for _ in range(CONFIRM_STEPS + 1):
                check_cancelled()
                with client.stream("GET", url, params=params) as response:
                    if _is_file(response):
                        return _save_public(response, file_id, out_dir, public.max_bytes, what, check_cancelled)
                    page = _read_page(response)
                confirm = _confirm_form(page, str(response.url))
                if response.status_code >= 400 or confirm is None:
                    raise OperationError(_public_refusal(what, response.status_code, page))
                url, params = confirm
    except httpx.HTTPError as exc:
        raise OperationError(f"downloading {what} from {_origin(public.url)} failed: {_describe(exc)}") from None
    raise OperationError(f"{what}: Drive kept asking to confirm the download ({CONFIRM_STEPS} times)")


def _is_file(response: httpx.Response) -> bool:
    """Drive sends a file as an attachment; its pages (warnings, errors, sign-in) are inline HTML."""
    if response.status_code >= 400:
        return False
    if "attachment" in response.headers.get("content-disposition", "").lower():
        return True
    return not response.headers.get("content-type", "").lower().startswith("text/html")


def _read_page(response: httpx.Response) -> str:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= PAGE_MAX_BYTES:
            break
    return bytes(body[:PAGE_MAX_BYTES]).decode(response.encoding or "utf-8", errors="replace")


def _save_public(
    response: httpx.Response,
    file_id: str,
    out_dir: Path,
    max_bytes: int,
    what: str,
    check_cancelled: Callable[[], None],
) -> Path:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise OperationError(f"{what} is {int(declared)} bytes, more than the limit of {max_bytes} bytes")
    target = out_dir / file_id / _safe(_attachment_name(response) or file_id, file_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with target.open("wb") as sink:
            for chunk in response.iter_bytes():  # as received: memory stays small, a cancel is seen promptly
                check_cancelled()
                written += len(chunk)
                if written > max_bytes:
                    raise OperationError(f"{what} is larger than the limit of {max_bytes} bytes")
                sink.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)  # never leave a truncated file behind
        raise
    return target


def _attachment_name(response: httpx.Response) -> str | None:
    """The file's name from Content-Disposition (filename*=UTF-8''… preferred, as RFC 6266 says)."""
    header = response.headers.get("content-disposition")
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    name = message.get_filename()
    return str(name) if name else None


class _PageParser(HTMLParser):
    """The forms (action, method, named inputs), links and title of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.links: list[dict[str, str]] = []
        self.title = ""
        self._in_form: dict[str, Any] | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._in_form = {"attrs": found, "inputs": {}}
            self.forms.append(self._in_form)
        elif tag == "input" and self._in_form is not None and found.get("name"):
            if found.get("type", "text").lower() not in ("submit", "button", "image", "reset"):
                self._in_form["inputs"][found["name"]] = found.get("value", "")
        elif tag == "a" and found.get("href"):
            self.links.append(found)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _parse(page: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    return parser


def _confirm_form(page: str, page_url: str) -> tuple[str, dict[str, str]] | None:
    """Where "Download anyway" leads: the download form (Drive today), else its confirm link (before 2024)."""
    parsed = _parse(page)
    for form in parsed.forms:
        inputs = form["inputs"]
        if form["attrs"].get("id") == "download-form" or "confirm" in inputs:
            if form["attrs"].get("method", "get").lower() != "get":
                continue
            return urljoin(page_url, form["attrs"].get("action") or page_url), dict(inputs)
    for link in parsed.links:
        if link.get("id") == "uc-download-link" or "confirm=" in link["href"]:
            return urljoin(page_url, link["href"]), {}
    return None


def _public_refusal(what: str, status: int, page: str) -> str:
    title = " ".join(_parse(page).title.split())[:200] if page else ""
    said = f"HTTP {status}" + (f", {title!r}" if title else "")
    if status == 429 or "quota" in title.lower():
        return f"{what}: Drive refused the download ({said}): too many downloads of this file lately; try later"
    return (
        f"{what} could not be downloaded without credentials ({said}): it does not exist, or it is not shared "
        f'with "anyone with the link", or it is a folder (folders need {API_KEY_ENV} or {CREDENTIALS_ENV} '
        "on the server)"
    )


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
