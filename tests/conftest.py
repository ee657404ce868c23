"""Fixtures every folder of tests shares: the real local stack, an op's run context, Chromium, a slow URL.

The helpers they are built on (and that tests import) are in tests/harness.py."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from harness import CHROMIUM, CHROMIUM_ARGS, Stack, start_stack, stop_stack

# Each family of sources brings its local server and the settings the stack needs to reach it.
pytest_plugins = ["services_s3", "services_drive", "services_databases", "services_models"]
# The test web servers (pytest-httpserver runs werkzeug) log every request line; that is not the code's
# log, which tests read with caplog, and a line would show a URL's query (a test's fake secret) in it.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def stack_env(
    s3_env: dict[str, str], drive_env: dict[str, str], database_env: dict[str, str], models_env: dict[str, str]
) -> dict[str, str]:
    """Server settings that point the stack at the test S3, Drive, databases and models."""
    return {**s3_env, **drive_env, **database_env, **models_env}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"), stack_env)
    yield running
    stop_stack(running)


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The server's data root for an in-process op test, empty; tests put their files in it."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def ctx(tmp_path: Path, data: Path):
    """What an op gets inside a run: the run's folder and the Workspace resource over `data`."""
    from orchestrator.assets.resources import Workspace  # Dagster loads only for the tests that use it
    from orchestrator.engine import RunContext

    # The test servers listen on 127.0.0.1, which the URL policy refuses unless allowed.
    workspace = Workspace(data_root=str(data), artifact_root=str(tmp_path / "art"), url_allow_private=True)
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


@pytest.fixture(scope="module")  # not longer: Playwright's sync API runs one instance at a time per thread
def browser():
    """Debian's Chromium, headless, driven by Playwright (which downloads no browser of its own)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def slow_file_url() -> Iterator[str]:
    """A local URL whose download never finishes while the test runs: the server sends a little every 0.5 s
    (so the downloader's read timeout never fires and a cancel is seen at the next chunk) and holds the
    response open until the test ends, however slow the machine. Its length is announced, so a download cut
    off at the end is an error, not a file."""
    released = threading.Event()

    def trickle(_: Request) -> Response:
        def body() -> Iterator[bytes]:
            while not released.wait(0.5):
                yield b"x" * 1024

        return Response(body(), headers={"content-length": str(1024**3)}, direct_passthrough=True)

    server = HTTPServer("127.0.0.1", threaded=True)  # a held response must not keep the other requests waiting
    server.expect_request("/slow.bin").respond_with_handler(trickle)
    server.start()
    yield server.url_for("/slow.bin")
    released.set()
    server.stop()
