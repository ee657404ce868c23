"""Downloading one file over HTTP(S), streamed to disk with a size cap."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from orchestrator.engine import OperationError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def download(
    url: str, out_dir: Path, max_bytes: int, check_cancelled: Callable[[], None] = lambda: None,
    timeout_s: float = 30.0,
) -> Path:
    """Fetch `url` into `out_dir`; refuse anything larger than `max_bytes`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperationError(f"{url!r} is not an http(s) URL")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response:
            if response.status_code >= 400:
                raise OperationError(f"{url} answered HTTP {response.status_code}")
            target = out_dir / _file_name(response, parts.path)
            try:
                _save(response, target, max_bytes, url, check_cancelled)
            except BaseException:
                target.unlink(missing_ok=True)  # never leave a truncated file behind
                raise
    except httpx.HTTPError as exc:
        raise OperationError(f"could not download {url}: {exc}") from None
    return target


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
