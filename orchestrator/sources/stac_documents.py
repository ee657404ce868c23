"""Reading STAC documents: over HTTP through the policed client, or as files under the data root.

pystac (static catalogs) and pystac-client (APIs) read every document through these readers, so
every request obeys the URL policy, and a local path must lie under the data root, outside the
folders where runs are kept. A catalog that came over HTTP may not name local files at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pystac
from pystac_client.stac_api_io import StacApiIO

from orchestrator.engine import OperationError
from orchestrator.sources import local
from orchestrator.sources.remote import MAX_DOCUMENT_BYTES, PolicedClient, shown

if TYPE_CHECKING:
    from orchestrator.preflight import Finding, Preflight

MAX_DOCUMENTS = 10_000  # JSON documents read from one static catalog: a walk that goes on is refused


class Documents(pystac.StacIO):
    """Reads STAC JSON for pystac: http(s) through the policed client, local files only under the data root."""

    def __init__(self, client: PolicedClient, data_root: Path, reserved: Sequence[local.Reserved] = ()):
        super().__init__()
        self.client, self.data_root, self.reserved = client, data_root, list(reserved)  # runs' folders: never read
        self.remote_origin = False  # set when the catalog came over HTTP: it may then not name local files
        self.read_count = 0
        self._first: dict[str, str] = {}

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if href in self._first:
            return self._first[href]
        self.read_count += 1
        if self.read_count > MAX_DOCUMENTS:
            raise OperationError(
                f"the catalog has more than {MAX_DOCUMENTS} documents; search it through a STAC API "
                "or give a sub-catalog or collection as url"
            )
        if is_http(href):
            status, text = self.client.get_text(href)
            if status >= 400:
                raise OperationError(f"{shown(href)} answered HTTP {status}")
            return text
        path = self.local_path(href)
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise OperationError(f"{self.shown(path)} is larger than {MAX_DOCUMENT_BYTES} bytes; not a STAC document")
        return path.read_text(encoding="utf-8")

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        raise OperationError("import_from_stac never writes a catalog")

    def first(self, href: str) -> dict[str, Any]:
        """The document at `href` as JSON; kept so that pystac's own read of it costs no second request."""
        text = self.read_text(href)
        self._first[href] = text
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise OperationError(f"{self.shown(href)} is not JSON: not a STAC catalog, collection or item") from None
        if not isinstance(parsed, dict) or "type" not in parsed:
            raise OperationError(f"{self.shown(href)} is not a STAC catalog, collection, item or item collection")
        return parsed

    def local_path(self, href: str) -> Path:
        """The file `href` names, checked to lie under the data root (links too) like import_from_local's paths."""
        if self.remote_origin:
            raise OperationError(
                f"a catalog read over HTTP links to {href!r}, which is not an http(s) URL; refused "
                "(only catalogs under the data root may name files)"
            )
        parts = urlsplit(href)
        if parts.scheme == "file":
            href = unquote(parts.path)
        elif parts.scheme and len(parts.scheme) > 1:  # s3://, ftp://...: a drive letter is not a scheme
            raise OperationError(f"{href!r} is neither an http(s) URL nor a file under the data root")
        relative = os.path.relpath(os.path.abspath(href), self.data_root)
        found = local.find_local_files(self.data_root, relative, self.reserved)
        if len(found) != 1 or Path(relative).name not in found:
            raise OperationError(f"{relative!r} is a folder, not a STAC document or an asset file")
        return next(iter(found.values()))

    def shown(self, href: str | Path) -> str:
        text = str(href)
        if is_http(text):
            return shown(text)
        try:
            return Path(text).resolve().relative_to(self.data_root).as_posix()
        except ValueError:
            return text


class ApiReader(StacApiIO):
    """pystac-client's API reader, sending every request through the policed client."""

    def __init__(self, documents: Documents):
        super().__init__()
        self.documents = documents

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(source, pystac.Link) or is_http(str(source)):
            return super().read_text(source, *args, **kwargs)
        raise OperationError(f"the STAC API links to {str(source)!r}, which is not an http(s) URL; refused")

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        method = (method or "GET").upper()
        if method == "GET" and not parameters and href in self.documents._first:
            return self.documents._first[href]  # the root, already read to tell an API from a static catalog
        body = parameters if method in ("POST", "PUT", "PATCH") else None
        query = parameters if body is None else None
        status, text = self.documents.client.get_text(href, method=method, headers=headers, json=body, params=query)
        if not 200 <= status < 300:
            raise OperationError(f"the STAC API answered HTTP {status} to {method} {shown(href)}: {said(text)}")
        return text


def said(text: str) -> str:
    """What an API's error body says, short: its description / detail when JSON, else the start of the text."""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            text = str(body.get("description") or body.get("detail") or body.get("message") or body)
    except json.JSONDecodeError:
        pass
    return " ".join(text.split())[:300]


def preflight(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """import_from_stac before launch: an http(s) URL the URL policy lets the server fetch, or a catalog file or
    folder under the data root, as import_from_local's paths."""
    from orchestrator.preflight import Finding
    from orchestrator.sources.stac import check_bbox
    from orchestrator.sources.url import url_findings

    try:  # its order too (west of east, south of north), which the catalog's JSON Schema cannot compare
        check_bbox(params.get("bbox"))
    except OperationError as refused:
        yield Finding("bbox", str(refused))
    url, workspace = params["url"], check.resources.workspace
    if is_http(url):
        yield from url_findings("url", url, workspace.url_policy())
        return
    if Path(url).is_absolute():  # as the run reads it (stac._local_entry)
        yield Finding("url", f"url {url!r}: give an http(s) URL, or a path relative to the data root")
        return
    try:
        local.locate(Path(workspace.data_root).resolve(), url, local.reserved_folders(workspace.artifact_root))
    except OperationError as refused:
        yield Finding("url", str(refused))


def is_http(href: str) -> bool:
    return href.startswith(("http://", "https://"))
