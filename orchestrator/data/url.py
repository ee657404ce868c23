"""Downloading one file over HTTP(S), streamed to disk with a size cap and an address check.

By default only public addresses are fetched: loopback, private, link-local (which holds the
cloud metadata service at 169.254.169.254), multicast and reserved ranges are refused, at
every redirect hop, so a pipeline cannot make the server reach its own network (SSRF).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from orchestrator.engine import OperationError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class UrlPolicy:
    """What the server lets pipelines download."""

    max_bytes: int = 2 * 1024**3
    allow_private: bool = False  # e.g. for tests, or a trusted intranet; a server setting, never a pipeline's
    timeout_s: float = 30.0


def download(url: str, out_dir: Path, policy: UrlPolicy, check_cancelled: Callable[[], None] = lambda: None) -> Path:
    """Fetch `url` into `out_dir`, following up to MAX_REDIRECTS redirects, each one checked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.Client(timeout=policy.timeout_s, follow_redirects=False) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                check_address(current, policy.allow_private)
                with client.stream("GET", current) as response:
                    if response.is_redirect and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise OperationError(f"{current} answered HTTP {response.status_code}")
                    target = out_dir / _file_name(response, urlsplit(current).path)
                    try:
                        _save(response, target, policy.max_bytes, url, check_cancelled)
                    except BaseException:
                        target.unlink(missing_ok=True)  # never leave a truncated file behind
                        raise
                    return target
    except httpx.HTTPError as exc:
        raise OperationError(f"could not download {url}: {exc}") from None
    raise OperationError(f"{url} redirects more than {MAX_REDIRECTS} times")


def check_address(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s), or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperationError(f"{url!r} is not an http(s) URL")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise OperationError(f"cannot resolve {parts.hostname!r}: {exc.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise OperationError(
                f"{parts.hostname} resolves to {address}, a non-public address; the server refuses "
                "to fetch it (set CONSTELLATION_URL_ALLOW_PRIVATE=1 on the server to allow)"
            )


def _save(
    response: httpx.Response, target: Path, max_bytes: int, url: str, check_cancelled: Callable[[], None]
) -> None:
    written = 0
    with target.open("wb") as sink:
        for chunk in response.iter_bytes():  # as received, so a cancel is seen promptly
            check_cancelled()
            written += len(chunk)
            if written > max_bytes:
                raise OperationError(f"{url} is larger than the limit of {max_bytes} bytes")
            sink.write(chunk)


def _file_name(response: httpx.Response, url_path: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    raw = match.group(1) if match else unquote(url_path.rsplit("/", 1)[-1])
    name = _SAFE_NAME.sub("_", Path(raw).name).strip("._")
    return name or "download"
