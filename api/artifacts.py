"""A run's files as the gateway serves them: never a server path, always a URL the user can open."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from api.errors import ApiError

# Pages and files of a run are shown as they are: nothing in them may run script or fetch elsewhere.
SAFE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def file_url(base_url: str, run_id: str, relative: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}/files/{quote(relative)}"


def public_uris(document: Any, run_folder: Path, base_url: str, run_id: str) -> Any:
    """`document` with every file:// URI inside a run's folder turned into a gateway URL.

    Usually the run's own folder; a resumed run's reused outputs live in the folder of the run
    that made them, and are served from there. A file outside every run's folder (e.g. an input
    under the server's data root) keeps no server path: its URI becomes null, its name stays.
    """
    runs_root = run_folder.resolve().parent

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, str) and value.startswith("file://"):
            path = Path(unquote(urlparse(value).path)).resolve()
            if path.is_relative_to(runs_root) and len(path.relative_to(runs_root).parts) > 1:
                owner, *rest = path.relative_to(runs_root).parts
                return file_url(base_url, owner, "/".join(rest))
            return None
        return value

    return convert(document)


def run_file(run_folder: Path, relative: str) -> Path:
    """The file at `relative` inside the run's folder; 404 for anything else (links out included)."""
    root = run_folder.resolve()
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise ApiError(404, f"no file {relative!r} in this run")
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, f"no file {relative!r} in this run")
    return path


def media_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def find_report(results: list[dict[str, Any]], run_folder: Path, path: str | None) -> Path:
    """The HTML report of the run's comparison (the one at `path`, or the last one)."""
    comparisons = [r for r in results if isinstance(r.get("output"), dict) and r["output"].get("type") == "Comparison"]
    if path is not None:
        comparisons = [r for r in comparisons if r.get("path") == path]
    if not comparisons:
        where = f" at {path}" if path else ""
        raise ApiError(404, f"this run has no compare_models instruction{where} at its top level, so no report")
    uri = comparisons[-1]["output"].get("report")
    if not isinstance(uri, str) or not uri.startswith("file://"):
        raise ApiError(404, "this run's comparison has no HTML report")
    report = Path(unquote(urlparse(uri).path)).resolve()
    if not report.is_relative_to(run_folder.resolve()) or not report.is_file():
        raise ApiError(404, "this run's report is no longer on the server")
    return report
