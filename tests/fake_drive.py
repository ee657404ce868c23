"""A local stand-in for the Google Drive v3 API, Google's OAuth token endpoint and Drive's public downloads.

It answers exactly what the real google-api-python-client requests when its `api_endpoint`
is `<url>/drive/v3/` (seen by printing the requests): `GET /drive/v3/files/{id}` (metadata),
the same with `alt=media` (bytes, in the ranges MediaIoBaseDownload asks for),
`GET /drive/v3/files?q='<folder>' in parents and trashed = false&pageToken=...` (paged), and
`POST /token` (a service account's signed JWT, checked against its public key, for an access
token). Errors are JSON bodies shaped like Google's.

And what a browser (or gdown) gets without credentials, as Drive serves it since 2024:
`GET /uc?id=<id>&export=download` redirects to `GET /download?id=<id>&export=download`
(drive.google.com → drive.usercontent.google.com), which sends a file shared with anyone who
has the link as an attachment; a file larger than `confirm_above` gets instead the 200 HTML
page "Google Drive can't scan this file for viruses" whose form `download-form` (GET, hidden
`id`, `export`, `confirm=t`, `uuid`) downloads it; an unknown id or a folder gets a 404 HTML
page; a file not shared publicly redirects to a Google sign-in page (200 HTML). Every request
is recorded.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

FOLDER = "application/vnd.google-apps.folder"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
PAGE_SIZE = 3  # small, so that listing a folder of a few files takes several pages
PUBLIC_CHUNK = 64 * 1024  # public downloads are sent in pieces of this size
_FILE = re.compile(r"^/drive/v3/files/([^/]+)$")
_PARENT_QUERY = re.compile(r"^'([A-Za-z0-9_-]+)' in parents and trashed = false$")


def new_id() -> str:
    """A fresh id shaped like Drive's."""
    return secrets.token_urlsafe(24)


@dataclass
class Item:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    content: bytes | None = None
    shared: bool = True  # shared with "anyone with the link": downloadable without credentials

    def metadata(self) -> dict:
        described = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime_type}
        return described if self.content is None else {**described, "size": str(len(self.content))}


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def file_id(self) -> str | None:
        match = _FILE.match(self.path)
        return match.group(1) if match else None


@dataclass
class ServiceAccount:
    """A service account made for the tests: its key file and the public half to check signatures."""

    email: str
    private_key_pem: str
    public_key_pem: str
    key_file: Path


@dataclass
class FakeDrive:
    api_key: str = field(default_factory=lambda: "AIza-fake-" + secrets.token_urlsafe(16))
    items: dict[str, Item] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    issued_tokens: list[str] = field(default_factory=list)
    token_claims: list[dict] = field(default_factory=list)
    accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    # Called after each media range is sent: a test's hook into "between chunks".
    after_range: Callable[[Seen], None] | None = None
    # Public downloads of files larger than this get the virus-scan warning page first.
    confirm_above: int = 200_000
    # Called after each piece of a public download is sent, with the bytes sent so far.
    after_public_chunk: Callable[[Seen, int], None] | None = None
    issued_uuids: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- content

    def add_file(
        self,
        name: str,
        content: bytes,
        parent: str | None = None,
        mime_type: str = "application/octet-stream",
        file_id: str | None = None,
        shared: bool = True,
    ) -> str:
        item = Item(file_id or new_id(), name, mime_type, [parent] if parent else [], content, shared)
        self.items[item.id] = item
        return item.id

    def add_folder(self, name: str, parent: str | None = None, folder_id: str | None = None) -> str:
        item = Item(folder_id or new_id(), name, FOLDER, [parent] if parent else [])
        self.items[item.id] = item
        return item.id

    def add_document(self, name: str, parent: str | None = None) -> str:
        item = Item(new_id(), name, "application/vnd.google-apps.document", [parent] if parent else [])
        self.items[item.id] = item
        return item.id

    def service_account(self, folder: Path) -> ServiceAccount:
        """A new service account whose key file names this fake's /token as its token_uri."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        email = f"reader-{secrets.token_hex(3)}@constellation-tests.iam.gserviceaccount.com"
        key_id = secrets.token_hex(20)
        key_file = folder / f"{key_id}.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "constellation-tests",
                    "private_key_id": key_id,
                    "private_key": private,
                    "client_email": email,
                    "client_id": "1" * 21,
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        self.accounts[key_id] = account = ServiceAccount(email, private, public, key_file)
        return account

    def seen(self, file_id: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.file_id == file_id]

    def public_requests(self, file_id: str) -> list[Seen]:
        """Requests to the public download endpoint (/uc, /download) for `file_id`."""
        with self._lock:
            return [s for s in self.requests if s.path in ("/uc", "/download") and s.query.get("id") == file_id]

    @property
    def download_url(self) -> str:
        """What CONSTELLATION_GOOGLE_DOWNLOAD_URL is set to: as https://drive.usercontent.google.com/download."""
        return f"{self.url}/download"

    def listings(self, folder_id: str) -> list[Seen]:
        with self._lock:
            listed = [s for s in self.requests if s.path == "/drive/v3/files"]
        return [s for s in listed if s.query.get("q", "").startswith(f"'{folder_id}' in parents")]

    # --- server

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_endpoint(self) -> str:
        """What CONSTELLATION_GOOGLE_API_ENDPOINT is set to: the API's base URL, as googleapis.com/drive/v3/."""
        return f"{self.url}/drive/v3/"

    def start(self) -> FakeDrive:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._answer(self)

            def do_POST(self) -> None:
                fake._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- answers

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        seen = Seen(handler.command, parts.path, query, {k.lower(): v for k, v in handler.headers.items()})
        with self._lock:
            self.requests.append(seen)
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.command == "POST" and parts.path == "/token":
            return self._token(handler, body)
        if handler.command == "GET" and parts.path in ("/uc", "/download", "/ServiceLogin"):
            return self._public(handler, parts.path, query, seen)
        if handler.command != "GET" or not parts.path.startswith("/drive/v3/files"):
            return _error(handler, 404, f"no such endpoint: {handler.command} {parts.path}", "notFound")
        if not self._authorized(seen):
            return _error(handler, 401, "Request is missing required authentication credential.", "required")
        if parts.path == "/drive/v3/files":
            return self._list(handler, query)
        match = _FILE.match(parts.path)
        item = self.items.get(match.group(1)) if match else None
        if item is None:
            file_id = match.group(1) if match else ""
            return _error(handler, 404, f"File not found: {file_id}.", "notFound")
        if query.get("alt") == "media":
            return self._media(handler, item, seen)
        return _json(handler, 200, item.metadata())

    def _authorized(self, seen: Seen) -> bool:
        bearer = seen.headers.get("authorization", "").removeprefix("Bearer ")
        return seen.query.get("key") == self.api_key or bearer in self.issued_tokens

    def _token(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        assertion = form.get("assertion", "")
        try:
            header = jwt.decode_header(assertion)
            account = self.accounts[header["kid"]]
            # google-auth addresses the grant to Google's token endpoint, wherever token_uri points.
            claims = jwt.decode(assertion, certs=account.public_key_pem, audience=GOOGLE_TOKEN_AUDIENCE)
        except (ValueError, KeyError) as exc:
            return _json(handler, 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"})
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self.token_claims.append(claims)
            self.issued_tokens.append(token)
        _json(handler, 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _list(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        match = _PARENT_QUERY.match(query.get("q", ""))
        if not match:
            return _error(handler, 400, f"Invalid Value: {query.get('q')!r}", "invalid")
        if match.group(1) not in self.items:
            return _error(handler, 404, "File not found: .", "notFound")  # what Drive says
        children = sorted((i for i in self.items.values() if match.group(1) in i.parents), key=lambda i: i.id)
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or 100), PAGE_SIZE)
        page = {"kind": "drive#fileList", "files": [c.metadata() for c in children[start : start + size]]}
        if start + size < len(children):
            page["nextPageToken"] = str(start + size)
        _json(handler, 200, page)

    def _media(self, handler: BaseHTTPRequestHandler, item: Item, seen: Seen) -> None:
        if item.content is None:
            message = "Only files with binary content can be downloaded. Use Export with Docs Editors files."
            return _error(handler, 403, message, "fileNotDownloadable")
        content, wanted = item.content, seen.headers.get("range")
        total = len(content)
        if wanted is None:
            return _bytes(handler, 200, content, {})
        start, _, end = wanted.removeprefix("bytes=").partition("-")
        first, last = int(start), min(int(end) if end else total - 1, total - 1)
        if first >= total:
            return _bytes(handler, 416, b"", {"content-range": f"bytes */{total}"})
        if self.after_range is not None:
            self.after_range(seen)  # before the bytes leave, so the client sees its effect next
        _bytes(handler, 206, content[first : last + 1], {"content-range": f"bytes {first}-{last}/{total}"})

    def _public(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str], seen: Seen) -> None:
        """Drive's downloads for browsers: no credentials, HTML pages for anything but the file."""
        if path == "/ServiceLogin":
            return _page(
                handler,
                200,
                "Sign in - Google Accounts",
                "<form action='/signin' method='post'>"
                "<input type='email' name='identifier'><input type='submit' value='Next'></form>",
            )
        if path == "/uc":  # drive.google.com/uc sends browsers on to drive.usercontent.google.com/download
            return _bytes(handler, 303, b"", {"location": f"{self.url}/download?{urlencode(query)}"})
        item = self.items.get(query.get("id", ""))
        if item is None or item.content is None:
            return _page(
                handler,
                404,
                "Google Drive - Page Not Found",
                "<p>Sorry, the file you have requested does not exist.</p>",
            )
        if not item.shared:
            target = f"{self.url}/ServiceLogin?{urlencode({'continue': self.download_url + '?id=' + item.id})}"
            return _bytes(handler, 302, b"", {"location": target})
        confirmed = query.get("confirm") == "t" and query.get("uuid") in self.issued_uuids
        if len(item.content) > self.confirm_above and not confirmed:
            return self._virus_scan_warning(handler, item)
        headers = {
            "content-type": item.mime_type,
            "content-disposition": f"attachment; filename=\"{item.name}\"; filename*=UTF-8''{quote(item.name)}",
            "content-length": str(len(item.content)),
        }
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        sent = 0
        try:
            for start in range(0, len(item.content), PUBLIC_CHUNK):
                piece = item.content[start : start + PUBLIC_CHUNK]
                handler.wfile.write(piece)
                handler.wfile.flush()
                sent += len(piece)
                if self.after_public_chunk is not None:
                    self.after_public_chunk(seen, sent)
        except OSError:
            pass  # the client stopped reading (a cancelled or refused download)

    def _virus_scan_warning(self, handler: BaseHTTPRequestHandler, item: Item) -> None:
        """The page Drive shows instead of a file too large to scan, as of 2024 (its form, its wording)."""
        uuid = secrets.token_hex(16)
        with self._lock:
            self.issued_uuids.append(uuid)
        size_mb = max(1, len(item.content or b"") // (1024 * 1024))
        name = html.escape(item.name)
        body = (
            "<div class='uc-main'><div id='uc-text'><p class='uc-warning-caption'>Google Drive can't scan this "
            f"file for viruses.</p><p class='uc-warning-subcaption'><span class='uc-name-size'><a href='/open?id="
            f"{item.id}'>{name}</a> ({size_mb}M)</span> is too large for Google to scan for viruses. Would you "
            "still like to download this file?</p>"
            # A decoy form first: only the download form's fields lead to the file.
            "<form id='search' action='/search' method='get'><input type='text' name='q' value=''></form>"
            f"<form id='download-form' action='{self.download_url}' method='get'>"
            "<input type='submit' id='uc-download-link' class='goog-inline-block jfk-button jfk-button-action' "
            "value='Download anyway'/>"
            f"<input type='hidden' name='id' value='{item.id}'>"
            "<input type='hidden' name='export' value='download'>"
            "<input type='hidden' name='confirm' value='t'>"
            f"<input type='hidden' name='uuid' value='{uuid}'>"
            "</form></div></div>"
        )
        _page(handler, 200, "Google Drive - Virus scan warning", body)


def _page(handler: BaseHTTPRequestHandler, status: int, title: str, body: str) -> None:
    document = f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head><body>{body}</body></html>"
    _bytes(handler, status, document.encode(), {"content-type": "text/html; charset=utf-8"})


def _json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    _bytes(handler, status, json.dumps(body).encode(), {"content-type": "application/json; charset=UTF-8"})


def _error(handler: BaseHTTPRequestHandler, status: int, message: str, reason: str) -> None:
    detail = {"message": message, "domain": "global", "reason": reason}
    _json(handler, status, {"error": {"code": status, "message": message, "errors": [detail]}})


def _bytes(handler: BaseHTTPRequestHandler, status: int, content: bytes, headers: dict[str, str]) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("content-length", str(len(content)))
    handler.end_headers()
    handler.wfile.write(content)
