"""A run's files as the gateway serves them: never a server path, always a URL the user can open."""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import quote

from api.errors import ApiError
from orchestrator.runstore import RunStore, StoredFile

# Pages and files of a run are shown as they are: nothing in them may run script or fetch elsewhere;
# a report's links to the run's own files (GeoTIFF maps) may still be downloaded.
SAFE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox allow-downloads",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def file_url(base_url: str, run_id: str, relative: str) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}/files/{quote(relative)}"


def public_uris(document: Any, store: RunStore, base_url: str) -> Any:
    """`document` with every URI of a run's file (file://, or s3:// under the artifact root) a gateway URL.

    Usually the run's own folder; a resumed run's reused outputs live in the folder of the run
    that made them, and are served from there. A file outside every run's folder (e.g. an input
    under the server's data root) keeps no server path: its URI becomes null, its name stays. Other
    URIs (an export's s3:// destination) are left as they are.
    """

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, str) and value.startswith(("file://", "s3://")):
            located = store.locate(value)
            if located is not None and located[1]:
                return file_url(base_url, *located)
            return None if value.startswith("file://") else value
        return value

    return convert(document)


def run_file(store: RunStore, run_id: str, relative: str) -> StoredFile:
    """The file at `relative` inside the run's folder; 404 for anything else (links out included)."""
    stored = store.open(run_id, relative)
    if stored is None:
        raise ApiError(404, f"no file {relative!r} in this run")
    return stored


def media_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def find_report(results: list[dict[str, Any]], store: RunStore, path: str | None) -> tuple[str, str]:
    """Where the HTML report of the run's comparison is (the one at `path`, or the last one): (run, rel)."""
    comparisons = [r for r in results if isinstance(r.get("output"), dict) and r["output"].get("type") == "Comparison"]
    if path is not None:
        comparisons = [r for r in comparisons if r.get("path") == path]
    if not comparisons:
        stopped = [
            r
            for r in results
            if r.get("operation") == "compare_models" and r.get("state") and (path is None or r.get("path") == path)
        ]
        if stopped:  # a failed run: its comparison failed or never ran
            last = stopped[-1]
            happened = "did not run" if last["state"] == "not run" else last["state"]
            raise ApiError(
                409, f"compare_models at {last.get('path')} {happened}, so there is no report: {last.get('error')}"
            )
        where = f" at {path}" if path else ""
        raise ApiError(404, f"this run has no compare_models instruction{where} at its top level, so no report")
    uri = comparisons[-1]["output"].get("report")
    located = store.locate(uri) if isinstance(uri, str) else None
    if not isinstance(uri, str) or not uri.startswith(("file://", "s3://")):
        raise ApiError(404, "this run's comparison has no HTML report")
    if located is None or not located[1]:
        raise ApiError(404, "this run's report is no longer on the server")
    return located
