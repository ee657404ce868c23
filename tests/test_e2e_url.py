"""import_from_url through the real stack: a zip served over HTTP becomes a dataset."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A folder served over HTTP on 127.0.0.1 holding images.zip (two JPEGs in folders)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("Fire/a.jpg", "Normal/b.jpg"):
            image = io.BytesIO()
            Image.new("RGB", (120, 90), (200, 60, 20)).save(image, "JPEG")
            zf.writestr(name, image.getvalue())
    (tmp_path / "images.zip").write_bytes(buffer.getvalue())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_zip_from_a_url_is_unpacked_and_resized(stack: Stack, api: httpx.Client, served: str):
    imported = {"operation": "import_from_url", "parameters": {"url": f"{served}/images.zip"}}
    pipeline = {"instructions": [{"operation": "resize_image", "parameters": {"data": imported, "width": 30,
                                                                              "height": 20}}]}
    run = stack.wait_for_run(api.post("/execute", json=pipeline).json()["run_id"])
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert [f["name"] for f in result["output"]["files"]] == ["Fire/a.jpg", "Normal/b.jpg"]
    for item in result["output"]["files"]:
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (30, 20)


def test_a_missing_url_fails_the_run_with_the_http_status(stack: Stack, api: httpx.Client, served: str):
    pipeline = {"instructions": [{"operation": "import_from_url", "parameters": {"url": f"{served}/nope.zip"}}]}
    run = stack.wait_for_run(api.post("/execute", json=pipeline).json()["run_id"])
    assert run["run_status"] == "FAILURE"
    assert run["error"]["path"] == "/instructions/0" and "answered HTTP 404" in run["error"]["message"]
