"""import_from_url through the real stack: a zip served over HTTP becomes a dataset."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from PIL import Image
from pytest_httpserver import HTTPServer

from harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(httpserver: HTTPServer) -> str:
    """A local web server holding /images.zip (two JPEGs in folders); any other path is 404."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("Fire/a.jpg", "Normal/b.jpg"):
            image = io.BytesIO()
            Image.new("RGB", (120, 90), (200, 60, 20)).save(image, "JPEG")
            zf.writestr(name, image.getvalue())
    httpserver.expect_request("/images.zip").respond_with_data(buffer.getvalue(), content_type="application/zip")
    httpserver.no_handler_status_code = 404  # as a web server answers a file it does not have
    return httpserver.url_for("").rstrip("/")


def test_a_zip_from_a_url_is_unpacked_and_resized(stack: Stack, api: httpx.Client, served: str):
    imported = {"operation": "import_from_url", "parameters": {"url": f"{served}/images.zip"}}
    pipeline = {
        "instructions": [{"operation": "resize_image", "parameters": {"data": imported, "width": 30, "height": 20}}]
    }
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
