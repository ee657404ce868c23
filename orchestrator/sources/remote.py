"""HTTP reads for STAC: JSON documents, byte ranges of remote files, whole downloads, each through the URL policy.

Every request, and every redirect hop of it, is checked by `url.check_address` and connects
only to the addresses that check approved (the same pinning as `import_from_url`). GDAL never
opens a socket: rasterio reads a remote GeoTIFF through `RangeFile`, a Python file object that
fetches the byte ranges GDAL asks for with this client.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from orchestrator.engine import OperationError
from orchestrator.sources import url as url_policy
from orchestrator.sources.url import MAX_REDIRECTS, UrlPolicy

MAX_DOCUMENT_BYTES = 32 * 1024**2  # one STAC JSON document (a search page, a catalog); far above any real one


def shown(url: str) -> str:
    """A URL as errors and logs show it: without its query, which may hold a signature or a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url


class RangesUnsupported(Exception):
    """The server answered a range request with the whole file."""


class PolicedClient:
    """One httpx client whose every request and redirect hop obeys the URL policy; counts what it receives."""

    def __init__(self, policy: UrlPolicy, check_cancelled: Callable[[], None] = lambda: None):
        self.policy = policy
        self.check_cancelled = check_cancelled
        self._pins: dict[str, list[str]] = {}
        self._client = url_policy._client(policy, self._pins)  # the pinned transport of import_from_url
        self.bytes_received = 0
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PolicedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def stream(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Iterator[httpx.Response]:
        """The response to `method target`, redirects followed (each hop checked), body not yet read."""
        current = target
        try:
            for _ in range(MAX_REDIRECTS + 1):
                self.check_cancelled()
                addresses = url_policy.check_address(current, self.policy.allow_private, self.policy.resolver)
                if not self.policy.allow_private:
                    self._pins[url_policy._connect_host(current)] = addresses
                request = self._client.build_request(method, current, headers=headers, json=json, params=params)
                self.requests += 1
                response = self._client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        current = urljoin(str(response.url), response.headers["location"])
                        params = None  # already part of the first URL
                        if response.status_code == 303 or (response.status_code in (301, 302) and method != "GET"):
                            method, json = "GET", None
                        continue
                    yield response
                    return
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise OperationError(f"could not read {shown(current)}: {exc.__class__.__name__}") from None
        raise OperationError(f"{shown(target)} redirects more than {MAX_REDIRECTS} times")

    def get_text(
        self,
        target: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> tuple[int, str]:
        """(status, body as text) of a small document, refused past `max_bytes`."""
        with self.stream(method, target, headers=headers, json=json, params=params) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                self.bytes_received += len(chunk)
                if len(body) > max_bytes:
                    raise OperationError(f"{shown(target)} is larger than {max_bytes} bytes; not a STAC document")
            return response.status_code, body.decode(response.encoding or "utf-8", errors="replace")

    def read_range(self, target: str, start: int, length: int) -> tuple[bytes, int | None]:
        """Bytes [start, start+length) of a remote file and the file's full size (from Content-Range)."""
        headers = {"Range": f"bytes={start}-{start + length - 1}", "Accept-Encoding": "identity"}
        with self.stream("GET", target, headers=headers) as response:
            if response.status_code == 416:  # past the end
                return b"", _total_size(response.headers.get("content-range", ""))
            if response.status_code == 200:
                raise RangesUnsupported(target)
            if response.status_code != 206:
                raise OperationError(f"{shown(target)} answered HTTP {response.status_code} to a range request")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                self.bytes_received += len(chunk)
                if len(body) > length:
                    raise OperationError(f"{shown(target)} sent more bytes than the range asked for")
            return bytes(body), _total_size(response.headers.get("content-range", ""))

    def download(self, target: str, path: Path) -> Path:
        """The whole file at `target` written to `path` (streamed, capped by the policy's max_bytes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with self.stream("GET", target) as response, path.open("wb") as sink:
                if response.status_code >= 400:
                    raise OperationError(f"{shown(target)} answered HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    self.check_cancelled()
                    written += len(chunk)
                    self.bytes_received += len(chunk)
                    if written > self.policy.max_bytes:
                        limit = self.policy.max_bytes
                        raise OperationError(f"{shown(target)} is larger than the limit of {limit} bytes")
                    sink.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)  # never leave a truncated file behind
            raise
        return path


def _total_size(content_range: str) -> int | None:
    total = content_range.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


class RangeFile(io.RawIOBase):
    """A remote file read by HTTP range requests, as a seekable binary file for rasterio's `opener`.

    GDAL reads a GeoTIFF in many small pieces (tags of a few bytes), then whole tiles. A read
    smaller than `read_ahead` fetches `read_ahead` bytes from there (the next tags are usually
    close by), a larger one exactly its own bytes; what was fetched is kept (up to `cache_bytes`,
    least recently used dropped first), so a header costs a request or two and a tile its size.
    """

    def __init__(
        self, client: PolicedClient, target: str, read_ahead: int = 16 * 1024, cache_bytes: int = 64 * 1024**2
    ):
        super().__init__()
        self._client, self._url, self._read_ahead, self._cache_bytes = client, target, read_ahead, cache_bytes
        self._segments: OrderedDict[int, bytes] = OrderedDict()  # start offset -> bytes fetched from there
        self._cached = 0
        self._lock = threading.Lock()
        self._pos = 0
        self.fetched = read_ahead
        # The first request also learns the size; a COG keeps its header (and its overviews' headers) first.
        data, size = client.read_range(target, 0, read_ahead)
        if size is None:
            raise OperationError(f"{shown(target)} gave no file size (Content-Range) to a range request")
        self.size = size
        self._keep(0, data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self.size)
        if end <= self._pos:
            return 0
        with self._lock:
            data = self._span(self._pos, end)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _span(self, start: int, end: int) -> bytes:
        for offset, data in self._segments.items():
            if offset <= start and end <= offset + len(data):
                self._segments.move_to_end(offset)
                return data[start - offset : end - offset]
        length = min(max(end - start, self._read_ahead), self.size - start)
        self.fetched += length
        if self.fetched > self._client.policy.max_bytes:  # the same cap as a whole download of it
            raise OperationError(
                f"reading {shown(self._url)} took more than the limit of {self._client.policy.max_bytes} bytes"
            )
        data, _ = self._client.read_range(self._url, start, length)
        if len(data) != length:
            raise OperationError(f"{shown(self._url)} sent {len(data)} bytes for a range of {length}")
        self._keep(start, data)
        return data[: end - start]

    def _keep(self, offset: int, data: bytes) -> None:
        previous = self._segments.pop(offset, None)
        self._cached += len(data) - (len(previous) if previous is not None else 0)
        self._segments[offset] = data
        while self._cached > self._cache_bytes and len(self._segments) > 1:
            _, dropped = self._segments.popitem(last=False)
            self._cached -= len(dropped)
