"""Fixtures for the op tests: a data root, a run context over it, and a real local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.assets.resources import Workspace
from orchestrator.engine import RunContext


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The server's data root, empty; tests put their files in it."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def ctx(tmp_path: Path, data: Path) -> RunContext:
    """What an op gets inside a run: the run folder and the Workspace resource."""
    # The test servers listen on 127.0.0.1, which the URL policy refuses unless allowed.
    workspace = Workspace(data_root=str(data), artifact_root=str(tmp_path / "art"), url_allow_private=True)
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1: (folder, base URL)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # httpx honours these; the server is local
    folder = tmp_path / "site"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
